"""File and folder names inside a run, spelled once."""

from __future__ import annotations

import re

RECIPE = "recipe.yaml"
RUN_INFO = "run.json"
TRAIN_SUMMARY = "train_summary.json"
HOLDOUT_START = "holdout_start.json"
TRAINING_LOG = "training_log.jsonl"
TRAJECTORY = "adapter_trajectory.safetensors"
EVAL_DIR = "eval"
EVAL_SUMMARY = "summary.json"
CALIBRATION = "calibration.json"
DIRECTION = "direction.safetensors"  # a misalignment direction, its info in the metadata
DIRECTION_SUMMARY = "summary.json"  # beside it: norms and cosines by layer
STUDENT_AGREEMENT = "agreement.json"  # a distilled student's agreement with its teacher
MANIFEST = "em_organisms_release.json"
MODEL_ORIGIN = (
    "em_organisms_source.json"  # in a local model folder: its Hub id (a user may write it)
)

# PEFT's and transformers' files
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
TRAINER_STATE = "trainer_state.json"

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(name: str) -> int | None:
    """The step of a `checkpoint-N` folder name; None for any other name."""
    match = CHECKPOINT_DIR.match(name)
    return int(match.group(1)) if match else None


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"
