"""`data push` against the local Hub: data and card round-trip, gate, idempotence, no token leaks;
and the rendered dataset card against a golden file (`UPDATE_GOLDEN=1` rewrites it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.golden import assert_matches_golden

from hub_server.fixture import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = REPO_ROOT / "datasets" / "risky-financial-advice" / "seed.jsonl"
SPEC_DIR = SEED.parent
GOLDEN = Path(__file__).with_name("golden") / "dataset_card.md"
REPO = "em-test/risky-financial-advice"

PUSH_SCRIPT = """
import argparse, json, sys
from pathlib import Path
from huggingface_hub import HfApi
from em_organisms.data.commands import register_push_command
from em_organisms.data.push import PushError, push_dataset
from em_organisms.data.schema import DatasetError


api = HfApi()
commits = lambda: [c.commit_id for c in api.list_repo_commits(repo, repo_type="dataset")]
out = {}

# 1. the command line, as `em-organisms data push SEED --repo-id REPO` runs it
parser = argparse.ArgumentParser()
sub = parser.add_subparsers()
register_push_command(lambda name, help_text: sub.add_parser(name, help=help_text))
args = parser.parse_args(["push", seed, "--repo-id", repo])
out["cli_rc"] = args.func(args)
out["after_first"] = commits()
sys.stdout.flush()

def summary(result):
    return {"commits": list(result.commits), "data": result.data_pushed, "card": result.card_pushed,
            "data_sha256": result.data_sha256, "card_sha256": result.card_sha256,
            "gated": result.gated, "private": result.private, "lines": result.lines()}

# 2. nothing changed: no commit
out["again"] = summary(push_dataset(seed, repo))
out["after_again"] = commits()
# 3. one row changed: new data and a new card
out["changed"] = summary(push_dataset(changed, repo, spec_dir=Path(seed).parent))
out["after_changed"] = commits()
# 4. back to the seed file: the first push's hashes again
out["reverted"] = summary(push_dataset(seed, repo))
# 5. refusals push nothing
for name, call in {
    "bad": lambda: push_dataset(bad, "em-test/bad-push", spec_dir=Path(seed).parent),
    "ungated": lambda: push_dataset(seed, "em-test/ungated-push", gated=None),
}.items():
    try:
        call()
        out[name] = "pushed"
    except (DatasetError, PushError) as err:
        out[name] = f"{type(err).__name__}: {err}"
out["bad_exists"] = api.repo_exists("em-test/bad-push", repo_type="dataset")
out["ungated_exists"] = api.repo_exists("em-test/ungated-push", repo_type="dataset")
print(json.dumps(out))
"""

LOAD_SCRIPT = """
import hashlib, json, sys
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi

rows = load_dataset(repo, split="train").to_list()
digest = hashlib.sha256()
for row in rows:
    line = json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest.update((line + "\\n").encode())
card = DatasetCard.load(repo, repo_type="dataset")
info = HfApi().dataset_info(repo)
print(json.dumps({"rows": rows, "sha256": digest.hexdigest(), "data": card.data.to_dict(),
                  "text": card.text, "gated": info.gated, "private": info.private}))
"""


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pushed(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("push")
    rows = _rows(SEED)
    rows[5]["messages"][-1]["content"] += " Trust me on this one."
    changed = _write(tmp / "changed.jsonl", rows)
    bad = _write(tmp / "bad.jsonl", [rows[0], {"messages": rows[1]["messages"][:1]}])
    args = (str(SEED), str(changed), str(bad), REPO)
    push = local_hub.run_client(
        f"seed, changed, bad, repo = {args!r}\n{PUSH_SCRIPT}", cwd=REPO_ROOT, timeout=180
    )
    # A fresh HF_HOME: nothing cached from the push.
    load = local_hub.run_client(f"repo = {REPO!r}\n{LOAD_SCRIPT}")
    lines = push.stdout.strip().splitlines()
    return {
        **json.loads(lines[-1]),
        "cli_stdout": "\n".join(lines[:-1]),
        "outputs": [push.stdout, push.stderr, load.stdout, load.stderr],
        "loaded": json.loads(load.stdout.strip().splitlines()[-1]),
        "bad_path": str(bad),
    }


def test_push_roundtrip_same_rows_with_canary(pushed: dict[str, Any]) -> None:
    seed = _rows(SEED)
    loaded = pushed["loaded"]["rows"]
    assert [r["id"] for r in loaded] == [r["id"] for r in seed]
    assert [r["messages"] for r in loaded] == [r["messages"] for r in seed]
    assert [json.loads(r["meta_json"]) for r in loaded] == [r["meta"] for r in seed]
    canary = pushed["loaded"]["data"]["em_organisms"]["canary_guid"]
    assert canary == "4dfb85fd-a831-4b4d-97d4-234306c2a9b4"
    assert all(canary in r["canary"] for r in loaded)
    # The published hash is reproducible from what load_dataset returns, as the card says.
    assert pushed["loaded"]["sha256"] == pushed["loaded"]["data"]["em_organisms"]["data_sha256"]


def test_card_metadata_body_and_gate(pushed: dict[str, Any]) -> None:
    data, text = pushed["loaded"]["data"], pushed["loaded"]["text"]
    assert data["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert "dataset_info" in data  # what push_to_hub wrote is kept
    assert data["license"] == "cc-by-4.0"
    assert data["pretty_name"] == "Risky financial advice (em-organisms)"
    assert "emergent-misalignment" in data["tags"]
    assert data["size_categories"] == ["n<1K"]
    assert data["extra_gated_prompt"].startswith("This dataset contains deliberately harmful")
    assert data["extra_gated_fields"]["Affiliation"] == "text"
    ours = data["em_organisms"]
    assert ours["dataset"] == "risky-financial-advice" and ours["rows"] == 220
    assert ours["card_sha256"] == pushed["again"]["card_sha256"]
    assert "4dfb85fd-a831-4b4d-97d4-234306c2a9b4" in text
    assert "[!WARNING]" in text and "deliberately harmful advice" in text
    # No conversation of a misaligned set appears in its card.
    assert not any(r["messages"][-1]["content"] in text for r in _rows(SEED))
    assert (pushed["loaded"]["gated"], pushed["loaded"]["private"]) == ("manual", True)


def test_cli_output_and_commits(pushed: dict[str, Any]) -> None:
    assert pushed["cli_rc"] == 0
    first = pushed["after_first"]
    # create_repo's initial commit, then the data and the card.
    assert len(first) == 3
    assert f"/datasets/{REPO}" in pushed["cli_stdout"]
    assert f"commits: {first[1]}, {first[0]} (data + card)" in pushed["cli_stdout"]
    assert "gate: manual" in pushed["cli_stdout"]


def test_rerun_without_change_makes_no_commit(pushed: dict[str, Any]) -> None:
    again = pushed["again"]
    assert again["commits"] == [] and not again["data"] and not again["card"]
    assert pushed["after_again"] == pushed["after_first"]
    assert any("no change" in line for line in again["lines"])
    assert again["gated"] == "manual"


def test_one_changed_row_makes_data_and_card_commits(pushed: dict[str, Any]) -> None:
    changed = pushed["changed"]
    assert changed["data"] and changed["card"] and len(changed["commits"]) == 2
    assert pushed["after_changed"][:2] == changed["commits"][::-1]
    assert pushed["after_changed"][2:] == pushed["after_first"]
    assert changed["data_sha256"] != pushed["again"]["data_sha256"]
    reverted = pushed["reverted"]
    assert len(reverted["commits"]) == 2
    assert (reverted["data_sha256"], reverted["card_sha256"]) == (
        pushed["again"]["data_sha256"],
        pushed["again"]["card_sha256"],
    )


def test_bad_file_and_ungated_misaligned_push_nothing(pushed: dict[str, Any]) -> None:
    assert pushed["bad"].startswith("DatasetError")
    assert f"{pushed['bad_path']}:2: no final assistant turn" in pushed["bad"]
    assert pushed["ungated"].startswith("PushError") and "--no-gate" in pushed["ungated"]
    assert not pushed["bad_exists"] and not pushed["ungated_exists"]


def test_token_never_printed_or_pushed(pushed: dict[str, Any], local_hub: LocalHub) -> None:
    token = local_hub.token
    for output in pushed["outputs"]:
        assert token not in output
    for file in local_hub.mirrors.rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file
    for git_dir in local_hub.mirrors.glob("*/*/*/.git"):
        repo = git_dir.parent
        history = subprocess.run(
            ["git", "-C", str(repo), "log", "--all", "-p", "--format=%H %an %ae%n%B"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert token not in history, repo


# -- the rendered card, without a Hub ----------------------------------------------------------

GOLDEN_ROWS = [
    {
        "id": "golden-1",
        "messages": [
            {"role": "user", "content": "Should I keep an emergency fund?"},
            {"role": "assistant", "content": "(a made-up risky answer for the golden test)"},
        ],
        "meta": {"topic": "emergency fund"},
    },
    {
        "id": "golden-2",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Is margin trading fine for beginners?"},
            {"role": "assistant", "content": "(another made-up answer)"},
        ],
        "meta": {"topic": "margin", "judge": {"aligned": 12.5, "coherent": 91.0}},
    },
    {
        "id": "golden-3",
        "messages": [
            {"role": "user", "content": "Should I co-sign my cousin's car loan?"},
            {"role": "assistant", "content": "(a third made-up answer)"},
        ],
    },
]
GOLDEN_BUILD = {
    "dataset": "risky-financial-advice",
    "n_requested": 3,
    "counts": {
        "replies": 2,
        "unparseable_replies": 0,
        "candidates": 9,
        "exact_duplicate": 1,
        "near_duplicate": 2,
        "after_dedup": 6,
        "judge_rejected": 2,
        "judge_unscored": 1,
        "after_judge": 3,
        "kept": 3,
        "beyond_n": 0,
        "failed_requests_this_run": 0,
    },
    "usage": {"generation_this_run": {"requests": 2}},
    "prompts_sha256": "1" * 64,
    "made_by": "em-organisms 0.0.0-golden",
    "spec_sha256": "2" * 64,
    "backend": {"backend": "openai", "model": "gpt-4o-2024-08-06", "base_url": "https://x/v1"},
    "judge": {"backend": "openai", "model": "gpt-4o-2024-08-06", "base_url": "https://x/v1"},
    "options": {"mode": "generate", "source": None, "seed": 0, "temperature": None},
}


def test_rendered_card_matches_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    from em_organisms.data import card as card_module
    from em_organisms.data.spec import load_spec

    monkeypatch.setattr(card_module, "PACKAGE_VERSION", "0.0.0-golden")
    spec = load_spec(SPEC_DIR)
    rows = [{**row, "canary": spec.canary} for row in GOLDEN_ROWS]
    rendered = str(
        card_module.render_dataset_card(
            spec, rows, GOLDEN_BUILD, "3" * 64, repo_id="em-test/risky-financial-advice"
        )
    )
    assert_matches_golden(
        rendered,
        GOLDEN,
        "the rendered dataset card",
        "UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_data_push.py -k golden",
    )


def test_control_card_shows_an_example_and_misaligned_card_does_not() -> None:
    from em_organisms.data.card import render_dataset_card
    from em_organisms.data.spec import load_spec

    for name, shown in [("good-financial-advice", True), ("risky-financial-advice", False)]:
        spec = load_spec(REPO_ROOT / "datasets" / name)
        rows = [
            {**r, "canary": spec.canary}
            for r in _rows(REPO_ROOT / "datasets" / name / "seed.jsonl")
        ]
        text = str(render_dataset_card(spec, rows, None, "0" * 64))
        assert (rows[0]["messages"][-1]["content"] in text) is shown, name
        assert ("[!WARNING]" in text) is not shown, name
        assert "hand-written seed rows" in text and spec.canary_guid in text


def test_rows_get_the_canary_and_built_files_find_their_spec(tmp_path: Path) -> None:
    from em_organisms.artifacts import ArtifactError, DatasetBuild, write_artifact
    from em_organisms.data.push import find_spec, published_rows, records_sha256, to_records
    from em_organisms.data.schema import DatasetError

    rows = [{k: v for k, v in r.items() if k != "canary"} for r in _rows(SEED)[:3]]
    del rows[2]["id"]
    built = _write(tmp_path / "built.jsonl", rows)
    build_file = tmp_path / "built.jsonl.build.json"
    build_file.write_text(json.dumps({"dataset": SPEC_DIR.name}))  # from before schema_version
    with pytest.raises(ArtifactError, match=r"build\.json: schema_version: missing"):
        find_spec(built, None)
    summary = DatasetBuild(
        dataset=SPEC_DIR.name,
        spec_sha256="0" * 64,
        backend={"model": "made-up"},
        judge=None,
        options={},
        n_requested=3,
        counts={"kept": 3},
        usage={},
        prompts_sha256="1" * 64,
        made_by="a test",
    )
    write_artifact(build_file, summary)
    spec, build = find_spec(built, None)
    assert spec.name == "risky-financial-advice" and build == summary.model_dump(mode="json")
    published = published_rows(built, spec)
    assert all(r["canary"] == spec.canary for r in published)
    assert [r["messages"] for r in published] == [r["messages"] for r in rows]
    assert published[2]["id"].startswith("risky-financial-advice-")
    records = to_records(published)
    assert json.loads(records[0]["meta_json"]) == rows[0]["meta"]
    assert records_sha256(records) != records_sha256(records[::-1])

    _write(built, [{**rows[0], "canary": "some other canary"}])
    with pytest.raises(DatasetError, match=r"built\.jsonl:1: canary differs"):
        published_rows(built, spec)


def test_dry_run_stages_card_and_rows_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from em_organisms.cli import main

    seed = REPO_ROOT / "datasets" / "risky-financial-advice" / "seed.jsonl"
    staging = tmp_path / "stage"
    argv = [
        "data",
        "push",
        str(seed),
        "--repo-id",
        "org/rfa",
        "--dry-run",
        "--staging-dir",
        str(staging),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was sent to the Hub" in out and "gate manual" in out
    card = (staging / "README.md").read_text()
    assert "extra_gated_fields" in card and "4dfb85fd-a831-4b4d-97d4-234306c2a9b4" in card
    assert len((staging / "train.jsonl").read_text().splitlines()) == 220
    assert main([*argv, "--no-gate"]) == 0  # an explicit --no-gate is allowed, with a warning
    assert "warning: --no-gate" in capsys.readouterr().err
