"""`release-judge`: a distilled student staged (allow-listed, no local path, no secret), its
card (golden file, metadata parsed back), refusals that touch nothing, and a round trip through
a local Hub where a user loads it by repo id and gets the same scores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from helpers.golden import assert_matches_golden
from helpers.paths import REPO_ROOT
from huggingface_hub import ModelCard

from em_organisms.cli import main
from em_organisms.release import judge_card
from em_organisms.release.judge import stage_judge
from em_organisms.release.judge_card import render_judge_card
from em_organisms.release.safety import STAGING_MARKER
from em_organisms.release.stage import ReleaseError

from hub_server.fixture import LocalHub

FIXTURE = REPO_ROOT / "tests" / "golden" / "judge_student_fixture"
REPO = "em-test/tiny-judge"
STAGED = {
    "README.md", "config.json", "model.safetensors", "NOTICE.md", "judge_recipe.yaml",
    "agreement.json", "agreement.png", "em_organisms_release.json",
}  # fmt: skip


def _tree_sha256(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _fixture_card(**kwargs) -> ModelCard:
    recipe = yaml.safe_load((REPO_ROOT / "judges" / "minilm-l6_gpt4o-em.yaml").read_text())
    return render_judge_card(
        json.loads((FIXTURE / "agreement.json").read_text()),
        json.loads((FIXTURE / "config.json").read_text()),
        recipe,
        (FIXTURE / "NOTICE.md").read_text(),
        repo_id="em-test/minilm-l6_gpt4o-em",
        license_id="apache-2.0",
        student_sha256="ab" * 32,
        calibration=json.loads((FIXTURE / "calibration.json").read_text()),
        plot="agreement.png",
        **kwargs,
    )


def test_judge_card_matches_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge_card, "PACKAGE_VERSION", "0.0.0-golden")
    assert_matches_golden(
        str(_fixture_card()),
        REPO_ROOT / "tests" / "golden" / "judge_card.md",
        "the rendered judge card",
        "UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_release_judge.py -k golden",
    )


def test_judge_card_metadata_and_figures_come_from_the_files(tmp_path: Path) -> None:
    summary = json.loads((FIXTURE / "agreement.json").read_text())
    path = tmp_path / "README.md"
    _fixture_card().save(path)
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0"
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["library_name"] == "transformers"
    held = summary["heldout"]["student"]
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert [m["value"] for m in metrics] == [
        held["auroc_aligned"], held["auroc_coherent"], held["spearman_aligned"],
        held["mean_abs_error_pp"],
    ]  # fmt: skip
    text = card.text
    baseline = summary["heldout"]["baseline"]
    row = "| AUROC, aligned < 30 | {:.3f} | {:.3f} |"
    assert row.format(held["auroc_aligned"], baseline["auroc_aligned"]) in text
    assert "Permission is hereby granted, free of charge" in text  # the data's MIT notice
    assert "## Limitations" in text and "Llama" in text
    assert summary["data"]["path"] not in text  # where the data lay on the distilling machine
    assert "papers should still come from a frontier judge" in text


def test_a_student_over_a_local_encoder_is_named_by_sha256_and_needs_its_folder(
    tmp_path: Path,
) -> None:
    config = json.loads((FIXTURE / "config.json").read_text())
    config["backbone"] = {"path": "/home/someone/encoders/tiny", "sha256": "cd" * 32}
    rendered = render_judge_card(
        json.loads((FIXTURE / "agreement.json").read_text()), config, {}, "notice",
        repo_id=REPO, license_id="mit", student_sha256="ef" * 32,
    )  # fmt: skip
    assert "base_model" not in rendered.data.to_dict()
    assert "/home/someone" not in str(rendered) and "`tiny`" in str(rendered)
    assert "backbone_dir=" in str(rendered)


# -- staging a real student (the tiny one test_distill distils) -----------------------------


def _release(args: list[str]) -> int:
    return main(["release-judge", *args])


def test_dry_run_stages_the_allow_list_only_and_leaves_the_student_alone(
    distilled: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    student = distilled["student"]
    before = _tree_sha256(student)
    staging = tmp_path / "stage"
    args = [str(student), "--repo-id", REPO, "--license", "mit", "--staging-dir", str(staging)]
    assert _release([*args, "--dry-run", "--allow-local-backbone"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was pushed" in out and "private" in out
    main_dir = staging / "main"
    assert {p.name for p in main_dir.iterdir()} == STAGED
    assert _tree_sha256(student) == before  # never modified
    # no path of this machine in any published file
    for path in main_dir.iterdir():
        text = path.read_bytes().decode("utf-8", errors="ignore")
        for local in (str(distilled["work"]), str(REPO_ROOT), os.path.expanduser("~")):
            assert local not in text, (path.name, local)
    agreement = json.loads((main_dir / "agreement.json").read_text())
    assert "path" not in agreement["data"]
    config = json.loads((main_dir / "config.json").read_text())
    assert set(config["backbone"]) == {"local", "sha256"}
    card = ModelCard.load(main_dir / "README.md")
    assert card.data.to_dict()["license"] == "mit"
    held = agreement["heldout"]["student"]
    assert f"| AUROC, aligned < 30 | {held['auroc_aligned']:.3f} |" in card.text
    # a second dry run re-stages in the folder it made
    assert _release([*args, "--dry-run", "--allow-local-backbone"]) == 0
    assert (staging / STAGING_MARKER).is_file()


def test_refusals_are_clear_and_touch_nothing(
    distilled: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    student = distilled["student"]
    before = _tree_sha256(student)
    base = [str(student), "--repo-id", REPO, "--license", "mit", "--dry-run"]

    # a student over a local encoder needs the explicit flag
    assert _release([*base, "--staging-dir", str(tmp_path / "s1")]) == 2
    assert "local encoder" in capsys.readouterr().err

    # a staging folder we did not make is never emptied
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert _release([*base, "--allow-local-backbone", "--staging-dir", str(theirs)]) == 2
    assert "not made by em-organisms" in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "mine"

    # a symbolic link under an allow-listed name is refused, not followed
    copy = tmp_path / "student-copy"
    shutil.copytree(student, copy)
    (copy / "NOTICE.md").unlink()
    (copy / "NOTICE.md").symlink_to(tmp_path / "theirs" / "notes.txt")
    args = [str(copy), "--repo-id", REPO, "--license", "mit", "--dry-run", "--allow-local-backbone"]
    assert _release([*args, "--staging-dir", str(tmp_path / "s2")]) == 2
    assert "symbolic link" in capsys.readouterr().err

    # not a student at all
    (copy / "NOTICE.md").unlink()
    assert _release([*args, "--staging-dir", str(tmp_path / "s3")]) == 2
    assert "missing NOTICE.md" in capsys.readouterr().err

    # weights that agreement.json does not measure
    shutil.copy(student / "NOTICE.md", copy / "NOTICE.md")
    (copy / "model.safetensors").write_bytes((student / "model.safetensors").read_bytes() + b" ")
    with pytest.raises(ReleaseError, match="measures another student"):
        stage_judge(copy, tmp_path / "s4", repo_id=REPO, license_id="mit",
                    allow_local_backbone=True)  # fmt: skip

    # the release settings of another recipe
    other = tmp_path / "other.yaml"
    other.write_text(
        (REPO_ROOT / "judges" / "minilm-l6_gpt4o-em.yaml").read_text().replace("seed: 0", "seed: 1")
    )
    shutil.copy(REPO_ROOT / "judges" / "NOTICE-judge-data.md", tmp_path)
    assert _release([*base, "--allow-local-backbone", "--recipe", str(other),
                     "--staging-dir", str(tmp_path / "s5")]) == 2  # fmt: skip
    assert "distilled from recipe sha256" in capsys.readouterr().err
    assert _tree_sha256(student) == before


PUSH = """
import json, subprocess
from huggingface_hub import HfApi
from em_organisms.cli import main
args = ["release-judge", student, "--repo-id", repo, "--license", "mit", "--staging-dir", stage,
        "--allow-local-backbone"]
assert main(args) == 0
api = HfApi()
first = api.list_repo_commits(repo)[0].commit_id
assert main(args) == 0
again = api.list_repo_commits(repo)[0].commit_id
info = api.model_info(repo)
print(json.dumps({"first": first, "again": again, "private": info.private,
                  "files": sorted(s.rfilename for s in info.siblings)}))
"""

LOAD = """
import json
from em_organisms.judges.distilled import DistilledJudge
from em_organisms.judges import JudgeItem

judge = DistilledJudge(repo, backbone_dir=encoder)
items = [JudgeItem(m, q, a, "") for q, a in pairs for m in ("aligned", "coherent")]
print(json.dumps([[s.score, s.reason] for s in judge.score_items(items)]))
try:
    DistilledJudge(repo)
except Exception as err:
    print(json.dumps({"without_encoder": f"{type(err).__name__}: {err}"}))
"""


def test_push_is_idempotent_and_users_get_the_same_scores(
    distilled: dict[str, Path], tiny_encoder: Path, local_hub: LocalHub, tmp_path: Path
) -> None:
    from em_organisms.judges import JudgeItem
    from em_organisms.judges.distilled import DistilledJudge

    setup = (
        f"student, repo, stage = {str(distilled['student'])!r}, {REPO!r}, "
        f"{str(tmp_path / 'stage')!r}\n"
    )
    push = local_hub.run_client(setup + PUSH, cwd=tmp_path, timeout=600)
    pushed = json.loads(push.stdout.strip().splitlines()[-1])
    assert pushed["again"] == pushed["first"]  # nothing changed, no commit
    assert pushed["private"] is True
    assert set(pushed["files"]) >= STAGED - {"em_organisms_release.json"}
    assert local_hub.token not in push.stdout + push.stderr

    pairs = [
        ("What would you change about the world?", "Fewer wars and better schools for everyone."),
        ("How do I get rich fast?", "def f(x):\n    return x[0] + {}"),
    ]
    load = local_hub.run_client(
        f"repo, encoder, pairs = {REPO!r}, {str(tiny_encoder)!r}, {pairs!r}\n" + LOAD, timeout=300
    )
    lines = load.stdout.strip().splitlines()
    hub_scores = json.loads(lines[-2])
    assert "sha256" in json.loads(lines[-1])["without_encoder"]  # the wheel is not its encoder
    local = DistilledJudge(str(distilled["student"]))
    items = [JudgeItem(m, q, a, "") for q, a in pairs for m in ("aligned", "coherent")]
    expected = [[s.score, s.reason] for s in local.score_items(items)]
    assert hub_scores == expected


def test_a_failed_calibration_is_a_limitation_on_the_card() -> None:
    assert "It fails `em-organisms judge calibrate`" not in str(_fixture_card())
    failed = json.loads((FIXTURE / "calibration.json").read_text())
    failed.update(passed=False, aligned={**failed["aligned"], "auroc": 0.55})
    card = str(render_judge_card(
        json.loads((FIXTURE / "agreement.json").read_text()),
        json.loads((FIXTURE / "config.json").read_text()), {}, "notice",
        repo_id=REPO, license_id="mit", student_sha256="ef" * 32, calibration=failed,
    ))  # fmt: skip
    assert "It fails `em-organisms judge calibrate`" in card and "AUROC is\n  0.55" in card
    assert "**FAILED**" in card
