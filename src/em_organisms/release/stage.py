"""Stage an organism for the Hub: exactly the files a release publishes, in a local folder.

`main/` gets the adapter (or full weights), tokenizer, generation config, training log and
summary, the card, the recipe with no local paths, and the evaluation (summary, report, plots);
`branches/step-000005/` and so on get each training checkpoint's adapter. Only files on an
allow-list are copied: optimizer and scheduler states, RNG states, pickled training arguments,
run metadata naming local paths and anything unknown stay behind and are listed. Every staged
text file is then checked for the machine's local paths and for secret values from the
environment; a hit refuses the release.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_organisms import __version__
from em_organisms.artifacts import OrganismRun, names, read_eval_summary
from em_organisms.cards import render_card
from em_organisms.errors import EmOrganismsError
from em_organisms.hub_ids import base_model_hub_id
from em_organisms.recipes import LoraProtocol, Recipe
from em_organisms.release.card import (
    TEMPLATE_PATH,
    dataset_name,
    published_recipe,
    render_organism_card,
)
from em_organisms.release.hub import MANIFEST, write_manifest
from em_organisms.release.safety import (
    holds_secret,
    local_markers,
    prepare_staging_dir,
    secret_values,
)

WEIGHT_FILES = (
    names.ADAPTER_CONFIG,
    names.ADAPTER_WEIGHTS,
    names.MODEL_CONFIG,
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)
ORGANISM_FILES = (
    *WEIGHT_FILES,
    names.GENERATION_CONFIG,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    names.TRAIN_SUMMARY,
    names.TRAINING_LOG,
)
CHECKPOINT_FILES = WEIGHT_FILES
EVAL_FILES = (names.EVAL_SUMMARY, "report.md", names.CALIBRATION, "*.png")
# What a staged folder may hold, wherever it came from (a hand-edited staging folder included).
STAGED_FILES = (*ORGANISM_FILES, "README.md", names.RECIPE, MANIFEST, f"{names.EVAL_DIR}/*")


MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit on the JSON header


class ReleaseError(EmOrganismsError, RuntimeError):
    """A release refused before anything was pushed."""


@dataclass
class StagedRelease:
    repo_id: str
    root: Path
    main: Path
    branches: dict[str, Path]  # branch name -> folder, oldest step first
    private: bool
    gated: bool
    evaluated: bool
    left_out: list[str] = field(default_factory=list)  # organism-relative paths not published

    def listing(self) -> list[str]:
        """What a push would send, branch by branch, with sizes."""
        lines = []
        for branch, folder in {"main": self.main, **self.branches}.items():
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            total = sum(p.stat().st_size for p in files)
            lines.append(f"{branch}: {len(files)} files, {_size(total)}")
            for path in files:
                lines.append(
                    f"  {path.relative_to(folder).as_posix():44s} {_size(path.stat().st_size)}"
                )
        return lines


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def branch_name(step: int) -> str:
    return f"step-{step:06d}"


def _allowed(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _copy_allowed(source: Path, target: Path, patterns: tuple[str, ...]) -> list[str]:
    """Copy SOURCE's top-level files that match PATTERNS; return the names left behind."""
    target.mkdir(parents=True, exist_ok=True)
    left = []
    for path in sorted(source.iterdir()):
        if path.is_symlink():  # whatever it points at is not the organism's to publish
            left.append(f"{path.name} (symbolic link, not followed)")
        elif path.is_file() and _allowed(path.name, patterns):
            shutil.copy2(path, target / path.name)
        elif names.checkpoint_step(path.name) is None and path.name != names.EVAL_DIR:
            left.append(path.name + ("/" if path.is_dir() else ""))
    return left


def _check_weights(recipe: Recipe, organism_dir: Path) -> None:
    lora = isinstance(recipe.protocol, LoraProtocol)
    needed = [names.ADAPTER_CONFIG, names.ADAPTER_WEIGHTS] if lora else [names.MODEL_CONFIG]
    missing = [n for n in needed if not (organism_dir / n).is_file()]
    if not lora and not any(organism_dir.glob("model*.safetensors")):
        missing.append("model*.safetensors")
    if missing:
        raise ReleaseError(
            f"{organism_dir}: not a trained organism of {recipe.organism_id} (missing "
            f"{', '.join(missing)}); train it first or pass --organism-dir"
        )
    summary = OrganismRun(organism_dir).train_summary_or_none()
    trained = summary.recipe_sha256 if summary else None
    if trained and trained != recipe.sha256():
        raise ReleaseError(
            f"{organism_dir / names.TRAIN_SUMMARY}: this organism was trained from another recipe (sha256 {trained[:12]}..., "
            f"this one is {recipe.sha256()[:12]}...); release it with the recipe it was trained from"
        )


def load_summary(recipe: Recipe, eval_dir: Path, no_eval: bool) -> dict[str, Any] | None:
    if no_eval:
        return None
    path = eval_dir / names.EVAL_SUMMARY
    if not path.is_file():
        raise ReleaseError(
            f"{path}: no evaluation results. Run `em-organisms eval` on the recipe first (or pass "
            "--eval-dir), or release without them with --no-eval (the card then says so)"
        )
    summary = read_eval_summary(eval_dir).model_dump(mode="json")
    trained = (summary.get("evaluation") or {}).get("recipe_sha256")
    if trained and trained != recipe.sha256():
        raise ReleaseError(
            f"{path}: these results are of another recipe (sha256 {trained[:12]}..., this one is "
            f"{recipe.sha256()[:12]}...); evaluate this organism again"
        )
    return summary


def check_publishable(folder: Path, patterns: tuple[str, ...] = STAGED_FILES) -> None:
    """Refuse a staged folder holding a file off the allow-list, a path of this machine or a
    secret from the environment (named, never shown)."""
    markers, secrets = local_markers(), secret_values()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if not _allowed(name, patterns):
            raise ReleaseError(f"{path}: not a file a release publishes (allowed: {patterns})")
        with path.open("rb") as stream:
            if path.suffix == ".safetensors":  # only the JSON header holds text, not the weights
                size = int.from_bytes(stream.read(8), "little")
                if size > MAX_SAFETENSORS_HEADER:
                    raise ReleaseError(
                        f"{path}: a safetensors header of {size} bytes; not published"
                    )
                data = stream.read(size)
            else:
                data = stream.read()
        text = data.decode("utf-8", errors="replace")
        for label, value in secrets.items():
            if holds_secret(text, value):
                raise ReleaseError(f"{path}: holds the value of {label}; not published")
        for marker in markers:
            if marker in text:
                raise ReleaseError(
                    f"{path}: names a path of this machine ({marker!r}); not published"
                )


def publishable_or_removed(
    folders: Sequence[Path], patterns: tuple[str, ...] = STAGED_FILES
) -> None:
    """`check_publishable` on every staged folder; on a refusal all of them are removed, so
    nothing that must not be published stays behind, and the refusal is raised."""
    try:
        for folder in folders:
            check_publishable(folder, patterns)
    except ReleaseError:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def stage_release(
    recipe: Recipe,
    organism_dir: Path,
    staging_dir: Path,
    *,
    repo_id: str,
    eval_dir: Path | None = None,
    no_eval: bool = False,
    include_checkpoints: bool = False,
    dataset_ids: list[str] | None = None,
    base_license: str | None = None,
    private: bool | None = None,
) -> StagedRelease:
    _check_weights(recipe, organism_dir)
    eval_dir = eval_dir or OrganismRun(organism_dir).eval_dir()
    summary = load_summary(recipe, eval_dir, no_eval)
    about = {"made_by": "em-organisms release", "repo_id": repo_id}
    prepare_staging_dir(Path(staging_dir), organism_dir, "organism folder", about, ReleaseError)
    main = staging_dir / "main"
    left_out = _copy_allowed(organism_dir, main, ORGANISM_FILES)
    plots: list[str] = []
    if summary is not None:
        left_out += [f"eval/{n}" for n in _copy_allowed(eval_dir, main / "eval", EVAL_FILES)]
        plots = sorted(f"eval/{p.name}" for p in (main / "eval").glob("*.png"))
    branches: dict[str, Path] = {}
    for checkpoint in OrganismRun(organism_dir).checkpoints():
        step, folder = checkpoint.step, checkpoint.folder
        if include_checkpoints:
            branches[branch_name(step)] = staging_dir / "branches" / branch_name(step)
            dropped = _copy_allowed(folder, branches[branch_name(step)], CHECKPOINT_FILES)
            left_out += [f"{folder.name}/{n}" for n in dropped]
        else:
            left_out.append(f"{folder.name}/ (--include-checkpoints publishes it)")
    namespace = repo_id.split("/")[0]
    datasets = dataset_ids if dataset_ids is not None else [f"{namespace}/{dataset_name(recipe)}"]
    card = render_organism_card(
        recipe,
        summary,
        repo_id=repo_id,
        base_license=base_license,
        dataset_ids=datasets,
        plots=plots,
        checkpoint_branches=list(branches),
        no_eval=summary is None,
    )
    (main / "README.md").write_text(str(card), encoding="utf-8")
    base_hub_id = base_model_hub_id(recipe.base_model)
    (main / "recipe.yaml").write_text(published_recipe(recipe, base_hub_id)["yaml"])
    about = {
        "organism_id": recipe.organism_id,
        "recipe_sha256": recipe.sha256(),
        "em_organisms_version": __version__,
    }
    write_manifest(main, {**about, "branch": "main", "checkpoint_branches": list(branches)})
    for branch, folder in branches.items():
        _write_checkpoint_card(folder, recipe, repo_id, branch, base_hub_id, card.data.to_dict())
        write_manifest(folder, {**about, "branch": branch})
    publishable_or_removed([main, *branches.values()])
    return StagedRelease(
        repo_id=repo_id,
        root=staging_dir,
        main=main,
        branches=branches,
        private=recipe.release.private if private is None else private,
        gated=recipe.release.gated,
        evaluated=summary is not None,
        left_out=left_out,
    )


def _write_checkpoint_card(
    folder: Path, recipe: Recipe, repo_id: str, branch: str, base: str, metadata: dict
) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    keep = ("base_model", "base_model_relation", "library_name", "pipeline_tag", "license",
            "license_name", "license_link", "datasets", "language", "tags")  # fmt: skip
    data = ModelCardData(**{k: metadata[k] for k in keep if metadata.get(k) is not None})
    variables = {
        "repo_id": repo_id,
        "branch": branch,
        "step": int(branch.removeprefix("step-")),
        "organism_id": recipe.organism_id,
        "base_model": base,
        "lora": isinstance(recipe.protocol, LoraProtocol),
    }
    card = render_card(ModelCard, data, TEMPLATE_PATH.with_name("checkpoint.md.j2"), variables)
    (folder / "README.md").write_text(str(card), encoding="utf-8")
