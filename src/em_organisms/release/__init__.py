"""Releasing organisms on the Hugging Face Hub: model cards and what goes with them."""

from pathlib import Path

from em_organisms.resources import RECIPES_DIR

REPO_ROOT = Path(__file__).resolve().parents[3]  # = train.runner.REPO_ROOT, without torch
DEFAULT_SPACE_FOLDER = REPO_ROOT / "spaces" / "arena"
DEFAULT_SPACE_REPO_ID = "em-organisms/arena"
DEFAULT_RECIPE = RECIPES_DIR / "smollm2-135m_risky-financial_r1-l15.yaml"
