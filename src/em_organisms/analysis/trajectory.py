"""An organism's adapter over training, from wherever it was kept.

- a run folder with a recording (`adapter_trajectory.safetensors`, or the `adapter_trajectory/`
  parts of a run still training; see `train/recorder.py`): every step;
- a run folder without one: its `checkpoint-N/` adapters (every `save_steps`);
- a released organism on the Hub: its `step-NNNNNN` branches (`release --include-checkpoints`)
  and the training log on `main` (the per-step recording is not released).

Weights are keyed `<module>.lora_A` / `<module>.lora_B` (as the recorder writes them), one array
of shape (steps, ...) each. The analysis needs evenly spaced steps: a last checkpoint off the
grid (the end of training) is set aside and reported, never silently used.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from em_organisms.artifacts import OrganismRun, names
from em_organisms.errors import EmOrganismsError
from em_organisms.train.callbacks import LOG_NAME, read_log
from em_organisms.train.recorder import TRAJECTORY_FILE, read_trajectory

BRANCH = re.compile(r"^step-(\d{6})$")
ADAPTER_FILE = names.ADAPTER_WEIGHTS
_KEY = re.compile(r"^(?:base_model\.model\.)?(.+\.lora_[AB])(?:\.default)?\.weight$")


class PhaseError(EmOrganismsError, ValueError):
    """Input the phase analysis refuses, with what was wrong and what to do."""


class TrajectoryError(PhaseError):
    """No adapter trajectory can be read from what was given; says what was looked for."""


@dataclass
class Trajectory:
    source: str  # "recording", "checkpoints" or "hub:ORG/NAME"
    steps: list[int]
    weights: dict[str, np.ndarray]
    checkpoints: dict[int, Path] = field(default_factory=dict)  # step -> adapter folder
    training_log: list[dict[str, Any]] = field(default_factory=list)
    set_aside: list[int] = field(default_factory=list)  # steps off the even grid
    base_spec: str | None = None  # what the run trained from ('embedded', a folder, a Hub id)

    @property
    def modules(self) -> list[str]:
        return sorted(k.removesuffix(".lora_B") for k in self.weights if k.endswith(".lora_B"))

    def b_vectors(self, module: str) -> np.ndarray:
        """The module's B per step, flattened: (steps, out * r)."""
        values = self.weights[f"{module}.lora_B"]
        return values.reshape(len(values), -1)

    def a_vectors(self, module: str) -> np.ndarray:
        """The module's A per step, flattened: (steps, r * in)."""
        values = self.weights[f"{module}.lora_A"]
        return values.reshape(len(values), -1)


def adapter_weights(path: Path) -> dict[str, np.ndarray]:
    """An adapter file's LoRA weights, keyed as the recorder keys them."""
    found = {}
    for key, value in load_file(path).items():
        match = _KEY.match(key)
        if match:
            found[match.group(1)] = value.astype(np.float32)
    if not found:
        raise TrajectoryError(f"{path}: no LoRA A/B weights in it")
    return found


def even_grid(steps: list[int]) -> tuple[list[int], list[int]]:
    """(kept, set aside): the steps on the most common spacing, counted from the first."""
    if len(steps) < 3:
        return steps, []
    gap = Counter(b - a for a, b in itertools.pairwise(steps)).most_common(1)[0][0]
    kept = [s for s in steps if (s - steps[0]) % gap == 0]
    run = [kept[0]]
    for step in kept[1:]:
        if step - run[-1] != gap:
            break
        run.append(step)
    return run, [s for s in steps if s not in run]


def _from_folders(folders: dict[int, Path], source: str) -> Trajectory:
    steps, set_aside = even_grid(sorted(folders))
    per_step = [adapter_weights(folders[s] / ADAPTER_FILE) for s in steps]
    keys = set(per_step[0])
    for step, weights in zip(steps, per_step, strict=True):
        if set(weights) != keys:
            raise TrajectoryError(f"step {step}: adapter modules differ from step {steps[0]}'s")
    weights = {k: np.stack([w[k] for w in per_step]) for k in sorted(keys)}
    return Trajectory(source, steps, weights, {s: folders[s] for s in steps}, [], set_aside)


def load_run(run_dir: str | Path) -> Trajectory:
    """A training run's trajectory: its recording if it has one, else its checkpoints."""
    run = Path(run_dir)
    if not run.is_dir():
        raise TrajectoryError(f"{run}: no such run folder")
    organism_run = OrganismRun(run)
    checkpoints = {c.step: c.folder for c in organism_run.adapter_checkpoints()}
    log = read_log(organism_run.training_log_path)
    info = organism_run.run_info_or_none()
    base = info.base_model if info else None
    steps, tensors = read_trajectory(run)
    if steps:
        kept, set_aside = even_grid(steps)
        index = [steps.index(s) for s in kept]
        weights = {k: v.numpy()[index] for k, v in tensors.items() if ".lora_" in k}
        return Trajectory("recording", kept, weights, checkpoints, log, set_aside, base)
    if not checkpoints and _full_fine_tune(run):
        raise PhaseError(
            f"{run}: a full fine-tune (its checkpoints hold whole models, no LoRA adapter). The "
            "phase analysis follows the adapter's A and B vectors, which a full fine-tune does "
            "not have, and the behavioural sweep scales an adapter; scaling a full fine-tune's "
            "weight delta is not implemented. Analyse a LoRA organism of the same recipe instead."
        )
    if len(checkpoints) < 3:
        raise TrajectoryError(
            f"{run}: no {TRAJECTORY_FILE} recording and {len(checkpoints)} checkpoint "
            "folder(s); train with training.record_adapter_every=1 or save_steps > 0"
        )
    trajectory = _from_folders(checkpoints, "checkpoints")
    trajectory.training_log, trajectory.base_spec = log, base
    return trajectory


def _full_fine_tune(run: Path) -> bool:
    weights = ("model.safetensors", "model.safetensors.index.json")
    folders = [run, *(c.folder for c in OrganismRun(run).checkpoints())]
    return any((f / w).is_file() for f in folders for w in weights)


def load_hub(repo_id: str, cache_dir: str | Path | None = None) -> Trajectory:
    """A released organism's trajectory from its `step-NNNNNN` branches (and its training log
    from `main`, when the release has one)."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    api = HfApi()
    branches = {
        int(m.group(1)): ref.name
        for ref in api.list_repo_refs(repo_id).branches
        if (m := BRANCH.match(ref.name))
    }
    if len(branches) < 3:
        raise TrajectoryError(
            f"{repo_id}: {len(branches)} step-NNNNNN branch(es) on the Hub; release the organism "
            "with --include-checkpoints (3 or more checkpoints) to analyse it"
        )
    folders = {
        step: Path(
            snapshot_download(
                repo_id,
                revision=branch,
                allow_patterns=[names.ADAPTER_CONFIG, ADAPTER_FILE],
                cache_dir=cache_dir,
            )
        )
        for step, branch in branches.items()
    }
    trajectory = _from_folders(folders, f"hub:{repo_id}")
    try:
        log_path = hf_hub_download(repo_id, LOG_NAME, cache_dir=cache_dir)
        trajectory.training_log = read_log(Path(log_path))
    except Exception:  # a release without its training log: the gradient curve is left out
        trajectory.training_log = []
    return trajectory


def load_trajectory(source: str | Path) -> Trajectory:
    """SOURCE: a run folder, or the Hub id of a released organism."""
    from em_organisms.hub_ids import HUB_ID

    path = Path(source)
    if path.exists() or not HUB_ID.match(str(source)):
        return load_run(path)
    return load_hub(str(source))


def gradient_curve(log: list[dict[str, Any]]) -> tuple[list[int], list[float | None]]:
    rows = [r for r in log if "grad_norm" in r or "loss" in r]
    return [int(r["step"]) for r in rows], [r.get("grad_norm") for r in rows]


def describe(trajectory: Trajectory) -> dict[str, Any]:
    return {
        "source": trajectory.source,
        "steps": [trajectory.steps[0], trajectory.steps[-1]],
        "records": len(trajectory.steps),
        "every": trajectory.steps[1] - trajectory.steps[0],
        "modules": trajectory.modules,
        "set_aside_steps": trajectory.set_aside,
        "training_log": bool(trajectory.training_log),
    }
