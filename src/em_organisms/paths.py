"""Where trained organisms live: one rule for writing and reading them.

A recipe's organism is `RUNS_DIR/ORGANISM_ID`, where RUNS_DIR is `$EM_ORGANISMS_RUNS_DIR` (or
`em-organisms --runs-dir DIR ...`, which sets it), else `runs/` under the current directory.
`train` writes there and `sample`, `eval`, `release`, `phase` and the arena read there, so a
recipe trained from one directory is found from the same one. What else a command writes by
default lives under RUNS_DIR too: `staging/` (releases staged before a push), `calibration/`,
`judges/` (distilled students).
"""

from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "EM_ORGANISMS_RUNS_DIR"


def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def organism_dir(organism_id: str) -> Path:
    return runs_dir() / organism_id
