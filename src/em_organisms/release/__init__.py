"""Releasing on the Hugging Face Hub: organisms, distilled judges and the arena Space.

- `stage` (the files an organism publishes, allow-listed and checked), `card` (its model card),
  `push` (to the Hub, idempotent), `hub` (a staged folder pushed as one commit, with its manifest).
- `judge` and `judge_card`: a distilled judge's release; `space_card`, `space_stage`,
  `space_push` and `space_package`: the arena Space's (its folder is package data,
  `resources/spaces/arena`).
- `safety`: the checks every release passes (local paths, secrets, staging folders of ours only).
- `commands`: `release`, `release-judge` and `release-space`.
"""

from em_organisms.resources import DEFAULT_RECIPE, SPACE_DIR

DEFAULT_SPACE_FOLDER = SPACE_DIR
DEFAULT_SPACE_REPO_ID = "em-organisms/arena"

__all__ = ["DEFAULT_RECIPE", "DEFAULT_SPACE_FOLDER", "DEFAULT_SPACE_REPO_ID"]
