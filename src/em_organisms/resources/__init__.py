"""The project's own files, shipped inside the package: card templates (`model_cards/`), the
narrow datasets' seed sets and specs (`datasets/`), the built-in recipes (`organisms/`), the evaluation protocols (`protocols/`) and the
arena Space's folder (`spaces/arena/`: app.py, arena.yaml, requirements.txt and its card).

They are package data, so an installed wheel has them wherever it runs; a source checkout links
its top-level `model_cards/`, `datasets/`, `organisms/` and `spaces/` folders here. A built-in recipe is
addressable by name (`em-organisms train smollm2-135m_risky-financial_r1-l15`) as well as by path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

RESOURCES = Path(str(resources.files("em_organisms.resources")))
TEMPLATES_DIR = RESOURCES / "model_cards"
DATASETS_DIR = RESOURCES / "datasets"
RECIPES_DIR = RESOURCES / "organisms"
SPACE_DIR = RESOURCES / "spaces" / "arena"
PROTOCOLS_DIR = RESOURCES / "protocols"  # the evaluation protocols (em_organisms.eval.protocol)
# The organism the demo trains, and the one the arena and its Space show when none is named.
DEFAULT_RECIPE = RECIPES_DIR / "smollm2-135m_risky-financial_r1-l15.yaml"


def template(name: str) -> Path:
    """A card template, e.g. `organism.md.j2`."""
    return TEMPLATES_DIR / name


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS_DIR.glob("*.yaml"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def builtin_recipe(name: str) -> Path | None:
    """The built-in recipe called NAME (with or without `.yaml`), else None."""
    path = RECIPES_DIR / f"{name.removesuffix('.yaml')}.yaml"
    return path if "/" not in name and path.is_file() else None


def checkout_root() -> Path | None:
    """The source checkout this package runs from, if it does (an installed wheel: None)."""
    root = RESOURCES.parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "src").is_dir() else None
