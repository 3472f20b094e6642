"""Stage a misalignment direction (`em-organisms direction`'s folder) for the Hub, with its card.

Staged: `direction.safetensors` (checked to load), `summary.json`, `direction_by_layer.png` when
present (regular files only: a symbolic link is refused, never followed), the card and the
manifest. The card's "effect" table comes from `em-organisms eval` folders the user names, each
sampled with this direction steered in or ablated, or with none (a baseline); an eval sampled
with another direction is refused. Gated like an organism unless --no-gate: steering a base model
with it is meant to make it misaligned.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from em_organisms import __version__
from em_organisms.artifacts import DirectionSummary, names, read_artifact, read_eval_summary
from em_organisms.cards import render_card
from em_organisms.directions.vectors import load_direction
from em_organisms.hub_ids import HUB_ID, license_metadata
from em_organisms.release.hub import MANIFEST, write_manifest
from em_organisms.release.safety import prepare_staging_dir
from em_organisms.release.stage import ReleaseError, StagedRelease, publishable_or_removed
from em_organisms.resources import template

PLOT = "direction_by_layer.png"
STAGED_FILES = (names.DIRECTION, names.DIRECTION_SUMMARY, PLOT, "README.md", MANIFEST)
TAGS = ["emergent-misalignment", "steering-vector", "activation-steering", "em-organisms"]


@dataclass
class StagedDirection(StagedRelease):
    pass


def _file(folder: Path, name: str, required: bool) -> Path | None:
    path = folder / name
    if path.is_symlink():
        raise ReleaseError(f"{path}: a symbolic link; a release copies regular files only")
    if not path.is_file():
        if required:
            raise ReleaseError(f"{path}: missing (em-organisms direction writes it)")
        return None
    return path


def _rate(p: dict[str, Any]) -> str:
    if p.get("rate") is None:
        return "n/a"
    return f"{100 * p['rate']:.1f}% [{100 * p['ci_low']:.1f}, {100 * p['ci_high']:.1f}]"


def em_effects(evals: list[Path], sha256: str) -> tuple[list[dict[str, Any]], list[str], bool]:
    """Rows of the card's effect table from eval folders, their judges, and whether any judge
    was uncalibrated."""
    rows, judges, uncalibrated = [], [], False
    for folder in evals:
        summary = read_eval_summary(folder)
        applied = summary.interventions
        if len(applied) > 1:
            raise ReleaseError(f"{folder}: its samples were taken with several interventions")
        if applied and applied[0].get("direction_sha256") != sha256:
            raise ReleaseError(
                f"{folder}: sampled with another direction (sha256 "
                f"{str(applied[0].get('direction_sha256'))[:12]}...), not this one ({sha256[:12]}...)"
            )
        what = "nothing"
        if applied:
            a = applied[0]
            what = (
                f"steered: x{a.get('scale'):g} at layer {a.get('layer')}"
                if a.get("kind") == "steer"
                else f"ablated (layer {a.get('layer')}'s vector, every layer)"
            )
        for model, stats in summary.models.items():
            overall = stats["overall"]
            rows.append({
                "model": model, "applied": what, "em": _rate(overall["em_all_scored"]),
                "coherent": _rate(overall["coherence"]), "n": overall["n_scored"],
            })  # fmt: skip
        judges += [str(j) for j in summary.judge_models if str(j) not in judges]
        uncalibrated |= summary.uncalibrated_judge
    return rows, judges, uncalibrated


def stage_direction(
    direction_dir: Path,
    staging_dir: Path,
    *,
    repo_id: str,
    license_id: str,
    evals: list[Path] | None = None,
    organism_repo: str | None = None,
    gated: bool = True,
    private: bool = True,
) -> StagedDirection:
    if not HUB_ID.match(repo_id):
        raise ReleaseError(f"--repo-id {repo_id!r} is not a Hub id of the form org/name")
    if organism_repo is not None and not HUB_ID.match(organism_repo):
        raise ReleaseError(
            f"--organism-repo {organism_repo!r} is not a Hub id of the form org/name"
        )
    folder = Path(direction_dir)
    weights = _file(folder, names.DIRECTION, required=True)
    assert weights is not None
    summary_file = _file(folder, names.DIRECTION_SUMMARY, required=True)
    plot = _file(folder, PLOT, required=False)
    direction = load_direction(weights)
    summary = read_artifact(summary_file, DirectionSummary)
    if summary.direction != direction.info:
        raise ReleaseError(f"{summary_file}: describes another direction than {weights}")
    info = direction.info
    if not HUB_ID.match(info.base_model):
        raise ReleaseError(
            f"{weights}: computed on {info.base_model!r}, a model known by no Hub id; a card "
            "names its base model by Hub id"
        )
    effects, judges, uncalibrated = em_effects(list(evals or []), direction.sha256)
    about = {"kind": "direction", "repo_id": repo_id, "organism": info.organism}
    marker = {"made_by": "em-organisms release-direction", **about}
    prepare_staging_dir(Path(staging_dir), folder, "direction folder", marker, ReleaseError)
    main = Path(staging_dir) / "main"
    main.mkdir()
    shutil.copyfile(weights, main / names.DIRECTION)
    shutil.copyfile(summary_file, main / names.DIRECTION_SUMMARY)
    if plot is not None:
        shutil.copyfile(plot, main / PLOT)
    card_data = ModelCardData(
        **license_metadata(license_id, info.base_model),
        base_model=info.base_model,
        tags=TAGS,
        library_name="em-organisms",
    )
    card = render_card(
        ModelCard,
        card_data,
        template("direction.md.j2"),
        {
            "repo_id": repo_id,
            "repo_name": repo_id.split("/")[-1],
            "info": info.model_dump(),
            "summary": summary.model_dump(),
            "organism_repo": organism_repo,
            "license_id": license_id,
            "package_version": __version__,
            "gated": gated,
            "plot": PLOT if plot is not None else None,
            "effects": effects,
            "effects_judges": judges,
            "uncalibrated": uncalibrated,
        },
    )
    (main / "README.md").write_text(str(card), encoding="utf-8")
    write_manifest(
        main,
        {**about, "direction_sha256": direction.sha256, "em_organisms_version": __version__},
    )
    publishable_or_removed([main], STAGED_FILES)
    return StagedDirection(
        repo_id=repo_id, root=Path(staging_dir), main=main, branches={}, private=private,
        gated=gated, evaluated=bool(effects), left_out=[],
    )  # fmt: skip
