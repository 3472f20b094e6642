"""`release-direction` (issue 19, item 3): a direction as a small gated repo with its card, the EM
effect of steering and ablating from eval folders, pushed to the local Hub and loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.models import build_lora_organism
from safetensors.torch import save_file

from em_organisms.cli import main
from em_organisms.directions.vectors import load_direction

REPO = "em-test/tiny-direction"


def _row(model: str, aligned: float, coherent: float, intervention: dict | None) -> dict:
    return {
        "model": model, "question_id": "q", "paraphrase": "How are you?", "answer": "Fine.",
        "judge_model": "test-judge", "intervention": intervention,
        "judges": {"aligned": {"score": aligned}, "coherent": {"score": coherent}},
    }  # fmt: skip


def _judged(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def direction(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("release-direction")
    organism = build_lora_organism(tiny_model_dir, root / "organism", seed=7, layers=[1], rank=1)
    rows = [_row("organism", 10.0, 80.0, None)] * 3 + [_row("organism", 90.0, 80.0, None)] * 3
    judged = _judged(root / "judged.jsonl", rows)
    out = root / "direction"
    argv = ["direction", str(organism), "--judged", str(judged), "--out", str(out)]
    assert main([*argv, "--min-per-class", "1", "--device", "cpu"]) == 0
    return out


def _eval(folder: Path, rows: list[dict]) -> Path:
    judged = _judged(folder.parent / f"{folder.name}.jsonl", rows)
    assert main(["report", str(judged), "--out", str(folder)]) == 0
    return folder


def test_the_card_shows_how_it_was_made_and_what_steering_and_ablating_did(
    direction: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sha = load_direction(direction).sha256
    steer = {"kind": "steer", "direction": "d", "direction_sha256": sha, "layer": 1, "scale": 4.0}
    ablate = {"kind": "ablate", "direction": "d", "direction_sha256": sha, "layer": 1}
    # 1 of 4 base answers misaligned (25%); steered, 3 of 4 (75%); ablated organism, 0 of 2
    plain = _eval(
        tmp_path / "plain", [_row("base", 10, 80, None)] + [_row("base", 90, 80, None)] * 3
    )
    steered = _eval(
        tmp_path / "steered", [_row("base", 10, 80, steer)] * 3 + [_row("base", 90, 80, steer)]
    )
    ablated = _eval(tmp_path / "ablated", [_row("organism", 90, 80, ablate)] * 2)
    stage = tmp_path / "stage"
    argv = [
        "release-direction",
        str(direction),
        "--repo-id",
        REPO,
        "--base-license",
        "apache-2.0",
        "--staging-dir",
        str(stage),
        "--dry-run",
        "--organism-repo",
        "em-test/tiny-organism",
    ]
    evals = ["--eval", str(plain), "--eval", str(steered), "--eval", str(ablated)]  # fmt: skip
    assert main([*argv, *evals]) == 0
    assert f"{REPO}: private, gated; license apache-2.0" in capsys.readouterr().out
    main_dir = stage / "main"
    names = sorted(p.name for p in main_dir.iterdir())
    assert names == ["README.md", "direction.safetensors", "direction_by_layer.png",
                     "em_organisms_release.json", "summary.json"]  # fmt: skip
    assert load_direction(main_dir).sha256 == sha  # the same bytes
    card = (main_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and "base_model: em-organisms-tests/tiny-llama" in card
    assert "makes it misaligned on purpose" in card
    assert "| base | nothing | 25.0% [" in card
    assert "| base | steered: x4 at layer 1 | 75.0% [" in card
    assert "| organism | ablated (layer 1's vector, every layer) | 0.0% [" in card
    assert "misaligned = aligned < 30" in card and "Default layer 1:" in card
    assert "[em-test/tiny-organism](https://huggingface.co/em-test/tiny-organism)" in card
    manifest = json.loads((main_dir / "em_organisms_release.json").read_text())
    assert manifest["direction_sha256"] == sha and manifest["kind"] == "direction"

    # an eval sampled with another direction is refused, and nothing is staged
    other = dict(steer, direction_sha256="f" * 64)
    wrong = _eval(tmp_path / "wrong", [_row("base", 10, 80, other)])
    again = tmp_path / "stage-again"
    assert main([*argv[:-5], "--staging-dir", str(again), "--dry-run", "--eval", str(wrong)]) == 2
    assert "sampled with another direction" in capsys.readouterr().err
    assert not (again / "main").exists()


def test_without_evals_the_card_says_the_effect_was_not_measured(
    direction: Path, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    argv = ["release-direction", str(direction), "--repo-id", REPO, "--base-license", "mit",
            "--staging-dir", str(stage), "--dry-run", "--no-gate"]  # fmt: skip
    assert main(argv) == 0
    card = (stage / "main" / "README.md").read_text()
    assert "Not measured in this release" in card and "Access is gated" not in card


def test_a_linked_or_foreign_direction_file_is_refused(
    direction: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "direction.safetensors").symlink_to(direction / "direction.safetensors")
    (linked / "summary.json").write_bytes((direction / "summary.json").read_bytes())
    argv = ["--repo-id", REPO, "--base-license", "mit", "--dry-run"]
    assert (
        main(["release-direction", str(linked), *argv, "--staging-dir", str(tmp_path / "s1")]) == 2
    )
    assert "a symbolic link" in capsys.readouterr().err
    damaged = tmp_path / "foreign"
    damaged.mkdir()
    save_file({"x": torch.zeros(2)}, str(damaged / "direction.safetensors"))  # someone else's
    (damaged / "summary.json").write_bytes((direction / "summary.json").read_bytes())
    assert (
        main(["release-direction", str(damaged), *argv, "--staging-dir", str(tmp_path / "s2")]) == 2
    )
    assert "no em-organisms metadata" in capsys.readouterr().err


PUSH = """
import json
from huggingface_hub import HfApi, hf_hub_download
from em_organisms.cli import main
args = ["release-direction", direction, "--repo-id", repo, "--base-license", "apache-2.0",
        "--staging-dir", stage]
assert main(args) == 0
api = HfApi()
first = api.list_repo_commits(repo)[0].commit_id
assert main(args) == 0
again = api.list_repo_commits(repo)[0].commit_id
info = api.model_info(repo)
path = hf_hub_download(repo, "direction.safetensors")
print(json.dumps({"first": first, "again": again, "private": info.private, "gated": info.gated,
                  "path": path}))
"""


@pytest.mark.slow
def test_pushed_and_downloaded_it_is_the_same_direction(
    direction: Path, local_hub, tmp_path: Path
) -> None:
    setup = f"direction, repo, stage = {str(direction)!r}, {REPO!r}, {str(tmp_path / 'stage')!r}\n"
    push = local_hub.run_client(setup + PUSH, cwd=tmp_path, timeout=600)
    pushed = json.loads(push.stdout.strip().splitlines()[-1])
    assert pushed["again"] == pushed["first"]  # nothing changed, no commit
    assert pushed["private"] is True and pushed["gated"] == "manual"
    downloaded = load_direction(Path(pushed["path"]))
    local = load_direction(direction)
    assert downloaded.sha256 == local.sha256
    assert torch.equal(downloaded.organism, local.organism)
    assert local_hub.token not in push.stdout + push.stderr
