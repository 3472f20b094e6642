"""Stage a distilled judge (a `judge distill` student folder) for the Hub.

Only allow-listed files of the student folder are staged, each a regular file directly in it
(a symbolic link is refused, never followed); anything else is left behind and listed. Two are
rewritten rather than copied, in the staging folder only (the student folder is never
modified): `agreement.json` loses `data.path` (where the teacher file lay on this machine), and
for a student trained over a local encoder `config.json` and `agreement.json` name that encoder
by folder name and sha256 instead of by path. Such a student is refused unless
`allow_local_backbone` (a test or private release: its card says the encoder is not on the
Hub). The staged folder is then checked like an organism's (no file off the allow-list, no path
of this machine, no secret from the environment; a hit empties it again).

The staging folder is ours only if it carries `STAGING_MARKER`, written when this module
created it; an existing folder without it is refused, never emptied. Pushing is the organism
release's (`push_release`): one commit, and none when the repo already holds these files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from em_organisms import __version__
from em_organisms.artifacts import (
    StudentAgreement,
    read_artifact,
    read_calibration,
    write_artifact,
)
from em_organisms.distill.scorer import STUDENT_FILES, student_sha256
from em_organisms.hub_ids import HUB_ID
from em_organisms.judges.distilled import default_student_dir
from em_organisms.release.hub import MANIFEST, write_manifest
from em_organisms.release.judge_card import public_backbone, render_judge_card
from em_organisms.release.safety import prepare_staging_dir
from em_organisms.release.stage import ReleaseError, StagedRelease, publishable_or_removed

REQUIRED = ("config.json", "model.safetensors", "NOTICE.md", "judge_recipe.yaml", "agreement.json")
OPTIONAL = ("calibration.json", "agreement.png")
STAGED_FILES = (*REQUIRED, *OPTIONAL, "README.md", MANIFEST)
STUDENT_MODEL_TYPE = "em-organisms-student-judge"


@dataclass
class StagedJudge(StagedRelease):
    local_backbone: bool = False  # trained over a local encoder, named by sha256 only


def _shipped_sha256() -> str | None:
    folder = default_student_dir()
    if not all((folder / name).is_file() for name in STUDENT_FILES):
        return None
    return student_sha256(folder)


def _student_files(student: Path) -> tuple[dict[str, Path], list[str]]:
    """({allowed name: path}, [left out]); refuses a symlink or non-file under an allowed name."""
    found, left = {}, []
    for path in sorted(student.iterdir()):
        if path.name not in (*REQUIRED, *OPTIONAL):
            left.append(path.name + ("/" if path.is_dir() and not path.is_symlink() else ""))
        elif path.is_symlink() or not path.is_file():
            what = "a symbolic link" if path.is_symlink() else "not a regular file"
            raise ReleaseError(f"{path}: {what}; only plain files of the student are published")
        else:
            found[path.name] = path
    missing = [n for n in REQUIRED if n not in found]
    if missing:
        raise ReleaseError(
            f"{student}: not a student from `em-organisms judge distill` (missing "
            f"{', '.join(missing)})"
        )
    return found, left


def _recipe_text(path: Path, recipe: dict[str, Any]) -> str:
    """judge_recipe.yaml as published: an absolute data.path becomes its file name."""
    data_path = Path(str(recipe.get("data", {}).get("path", "")))
    if not data_path.is_absolute():
        return path.read_text(encoding="utf-8")
    shown = {**recipe, "data": {**recipe["data"], "path": data_path.name}}
    note = "# data.path: a local file, shown by its name only\n"
    return note + yaml.safe_dump(shown, sort_keys=False)


def stage_judge(
    student_dir: Path,
    staging_dir: Path,
    *,
    repo_id: str,
    license_id: str,
    recipe_sha256: str | None = None,
    private: bool = True,
    allow_local_backbone: bool = False,
) -> StagedJudge:
    """Stage STUDENT_DIR as `repo_id` in STAGING_DIR/main (see the module docstring);
    `recipe_sha256`, when given, must be the student's (the recipe its release settings came
    from)."""
    from em_organisms.distill.recipe import load_judge_recipe

    if not HUB_ID.match(repo_id):
        raise ReleaseError(f"--repo-id {repo_id!r} is not a Hub id of the form org/name")
    student = Path(student_dir)
    if not student.is_dir():
        raise ReleaseError(f"{student}: no such student folder")
    files, left_out = _student_files(student)
    config_bytes = files["config.json"].read_bytes()
    config = json.loads(config_bytes)
    summary = read_artifact(files["agreement.json"], StudentAgreement).model_dump(mode="json")
    if config.get("model_type") != STUDENT_MODEL_TYPE:
        raise ReleaseError(f"{files['config.json']}: not a distilled judge's config")
    recipe = load_judge_recipe(files["judge_recipe.yaml"])
    sha = student_sha256(student)
    for what, value in (("its recipe", recipe.sha256()), ("agreement.json", summary.get("recipe_sha256")),
                        ("--recipe", recipe_sha256)):  # fmt: skip
        if value is not None and value != config.get("recipe_sha256"):
            raise ReleaseError(
                f"{student}: the student was distilled from recipe sha256 "
                f"{str(config.get('recipe_sha256'))[:12]}..., {what} is {value[:12]}...: "
                "release it with the recipe it was distilled from"
            )
    if summary.get("student_sha256") != sha:
        raise ReleaseError(
            f"{files['agreement.json']}: measures another student (sha256 "
            f"{str(summary.get('student_sha256'))[:12]}..., this one is {sha[:12]}...)"
        )
    backbone = config.get("backbone") or {}
    local = not backbone.get("hub_id")
    if local and not allow_local_backbone:
        raise ReleaseError(
            f"{student}: trained over a local encoder ({backbone.get('path') or 'no Hub id'}), not "
            "the pinned all-MiniLM-L6-v2 wheel: a card names its backbone by Hub id. Distil over "
            "the wheel, "
            "or pass --allow-local-backbone for a test or private release (the encoder is then "
            "named by sha256 only and users must pass its folder)"
        )
    clean = {**summary, "data": {k: v for k, v in summary.get("data", {}).items() if k != "path"}}
    if local:
        config = {**config, "backbone": public_backbone(backbone)}
        config_bytes = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
        clean["backbone"] = public_backbone(summary.get("backbone") or backbone)

    about = {"kind": "judge", "repo_id": repo_id, "name": summary.get("name")}
    marker = {"made_by": "em-organisms release-judge", **about}
    prepare_staging_dir(Path(staging_dir), student, "student folder", marker, ReleaseError)
    main = Path(staging_dir) / "main"
    main.mkdir()
    (main / "config.json").write_bytes(config_bytes)
    write_artifact(main / "agreement.json", StudentAgreement.model_validate(clean))
    (main / "judge_recipe.yaml").write_text(
        _recipe_text(files["judge_recipe.yaml"], recipe.model_dump()), encoding="utf-8"
    )
    for name in ("model.safetensors", "NOTICE.md", *OPTIONAL):
        if name in files:
            shutil.copyfile(files[name], main / name)
    calibration = files.get("calibration.json")
    released_sha = student_sha256(main)  # its config.json may name the backbone differently
    card = render_judge_card(
        clean,
        config,
        recipe.model_dump(),
        files["NOTICE.md"].read_text(encoding="utf-8"),
        repo_id=repo_id,
        license_id=license_id,
        student_sha256=released_sha,
        calibration=read_calibration(calibration).model_dump(mode="json") if calibration else None,
        plot="agreement.png" if "agreement.png" in files else None,
        shipped=released_sha == _shipped_sha256(),
    )
    (main / "README.md").write_text(str(card), encoding="utf-8")
    write_manifest(
        main,
        {**about, "recipe_sha256": config.get("recipe_sha256"), "student_sha256": released_sha,
         "em_organisms_version": __version__},
    )  # fmt: skip
    publishable_or_removed([main], STAGED_FILES)
    return StagedJudge(
        repo_id=repo_id, root=Path(staging_dir), main=main, branches={}, private=private,
        gated=False, evaluated=True, left_out=left_out, local_backbone=local,
    )  # fmt: skip
