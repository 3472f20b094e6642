"""Checkpoints that survive a kill: written under a temporary name, renamed when complete, and
resumed from the last complete one.

The trainer saves `checkpoint-N` into `.saving-checkpoint-N/` and renames it into place only
after its trainer state (written last) is on disk, so a kill mid-save never leaves a
`checkpoint-N` that `--resume` would trip over. With several processes, the main one makes the
temporary folder, every process writes its part (shards, RNG state) into it, and the main one
renames it once all have finished. A folder from an older version counts as complete only with
a readable `trainer_state.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from transformers.trainer_utils import rotate_checkpoints

from em_organisms.artifacts import Checkpoint, OrganismRun
from em_organisms.artifacts.names import TRAINER_STATE, checkpoint_name

SAVING_PREFIX = ".saving-"


def is_complete(checkpoint: Path) -> bool:
    try:
        return isinstance(json.loads((checkpoint / TRAINER_STATE).read_text()), dict)
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(run_dir: Path) -> tuple[Checkpoint | None, list[str]]:
    """The latest complete checkpoint of RUN_DIR, and the names of later incomplete ones."""
    found = OrganismRun(run_dir).checkpoints()
    complete = [c for c in found if is_complete(c.folder)]
    last = complete[-1] if complete else None
    # every checkpoint after the last complete one is, by that, incomplete
    return last, [c.folder.name for c in found if last is None or c.step > last.step]


def remove_unfinished_saves(run_dir: Path) -> list[str]:
    """Drop the `.saving-checkpoint-N` folders a kill left behind (only this module makes them)."""
    removed = []
    for path in sorted(run_dir.glob(f"{SAVING_PREFIX}checkpoint-*")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path.name)
    return removed


def save_atomically(
    save: Callable[[], None],
    args: object,
    step: int,
    save_total_limit: int | None,
    main: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> None:
    """Run SAVE (the trainer's own checkpoint save) with ARGS.output_dir pointed at a temporary
    folder, then rename its `checkpoint-STEP` into the run folder and rotate old checkpoints
    there (the save itself only sees the temporary folder). Every process calls this; only the
    MAIN one touches folders, and BARRIER keeps the others in step around that."""
    run_dir = Path(args.output_dir)  # type: ignore[attr-defined]
    staging = run_dir / f"{SAVING_PREFIX}{checkpoint_name(step)}"
    if main:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    barrier()
    args.output_dir = str(staging)  # type: ignore[attr-defined]
    try:
        save()
    finally:
        args.output_dir = str(run_dir)  # type: ignore[attr-defined]
    barrier()  # every process's part is on disk
    if main:
        _move_into_place(run_dir, staging, step, save_total_limit)
    barrier()


def _move_into_place(run_dir: Path, staging: Path, step: int, save_total_limit: int | None) -> None:
    final = run_dir / checkpoint_name(step)
    if final.exists() and not final.is_symlink():  # this run's own step, saved again
        shutil.rmtree(final)
    os.replace(staging / checkpoint_name(step), final)
    shutil.rmtree(staging)  # ours; it may hold the model card TRL writes beside a checkpoint
    rotate_checkpoints(str(run_dir), save_total_limit=save_total_limit, use_mtime=True)
