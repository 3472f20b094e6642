"""What the arena Space needs beside its own folder: the em_organisms package (not on PyPI, so
copied next to app.py, which imports it from there) and an arena.yaml the arena will accept."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import SpaceCard

import em_organisms

PACKAGE = "em_organisms"


def package_files(package_dir: Path | None = None) -> dict[str, Path]:
    """{staged path: file} of the em_organisms package (default: the imported one) as the Space
    gets it: every module, py.typed, the question sets and the evaluation protocols (pyproject's
    package data); never
    caches, bytecode, hidden files or anything else."""
    root = package_dir or Path(em_organisms.__file__).parent
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        skipped = any(part.startswith(".") or part == "__pycache__" for part in rel.parts)
        skipped = skipped or rel.parts[:2] == ("resources", "spaces")  # the Space's own folder
        if skipped or path.is_symlink() or not path.is_file():
            continue
        data = rel.parts[:2] in (("eval", "question_sets"), ("resources", "protocols"))
        if rel.suffix == ".py" or rel.as_posix() == "py.typed" or (data and rel.suffix == ".yaml"):
            files[f"{PACKAGE}/{rel.as_posix()}"] = path
    return files


def arena_config_problems(config: Path, card: SpaceCard) -> list[str]:
    """Why CONFIG (the Space's arena.yaml) would not run with CARD: the arena's own loader
    refuses it, it offers an organism the card's `models` do not list, or its direction is a
    path of this machine (a Space downloads it from the Hub)."""
    from em_organisms.hub_ids import is_hub_id
    from em_organisms.space.config import ArenaConfigError, load_config

    try:
        loaded = load_config(config)
    except ArenaConfigError as err:
        return [str(err)]
    organisms = loaded.organisms
    if not organisms:
        return [f"{config}: organisms: empty; the Space needs at least one organism to show"]
    problems = []
    # the arena takes a path that exists before a Hub id: so does this check
    direction = loaded.direction
    if direction is not None and (Path(direction).exists() or not is_hub_id(direction)):
        problems.append(
            f"{config}: direction: {direction!r} is not a Hub id; a Space downloads its "
            "direction from the Hub (publish it with release-direction)"
        )
    models = card.data.to_dict().get("models") or []
    return problems + [
        f"{config}: organisms: {organism!r} is not among the card's models ({', '.join(models)}); "
        "render the card for it (--organism RECIPE) or remove it from the config"
        for organism in organisms
        if organism not in models
    ]
