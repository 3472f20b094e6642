"""A user's files are sacred: the suite deletes only what it made, follows no symlink out of a
folder it was given, and never modifies an input (issue 18, items 1-3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.models import build_lora_organism
from helpers.paths import REPO_ROOT

from em_organisms.cli import main

DEMO_RECIPE = REPO_ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml"


@pytest.fixture
def organism(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A real (untrained) LoRA organism folder with two checkpoints, released under the demo
    recipe (its card names the embedded base by Hub id)."""
    folder = _organism(tiny_model_dir, tmp_path / "organism", seed=0)
    for step in (5, 10):
        _organism(tiny_model_dir, folder / f"checkpoint-{step}", seed=step)
    (folder / "training_log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    return folder


def _organism(base: Path, folder: Path, seed: int) -> Path:
    """As training leaves it: the adapter names its base by Hub id, not by this machine's path."""
    build_lora_organism(base, folder, seed=seed)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _release(organism: Path, staging: Path, *extra: str) -> int:
    return main(
        ["release", str(DEMO_RECIPE), "--organism-dir", str(organism), "--no-eval", "--dry-run",
         "--repo-id", "em-test/organism", "--staging-dir", str(staging), *extra]
    )  # fmt: skip


def test_release_never_empties_a_folder_it_did_not_make(
    organism: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("two years of work")
    assert _release(organism, mine) == 2
    assert "refusing to empty it" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "two years of work"
    for inside in (organism, organism / "checkpoint-5", organism.parent):
        assert _release(organism, inside) == 2
        assert "must be outside" in capsys.readouterr().err
    assert (organism / "adapter_model.safetensors").is_file()
    assert (organism / "checkpoint-5" / "adapter_model.safetensors").is_file()


def test_release_restages_its_own_folder(organism: Path, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    assert _release(organism, staging) == 0
    assert _release(organism, staging, "--include-checkpoints") == 0  # ours: emptied and redone
    assert (staging / "branches" / "step-000005" / "adapter_model.safetensors").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _release(organism, empty) == 0  # an empty folder holds nothing to lose


def test_release_follows_no_symlink_out_of_the_organism(
    organism: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    (organism / "training_log.jsonl").unlink()
    (organism / "training_log.jsonl").symlink_to(secret)
    (organism / "chat_template.jinja").symlink_to(secret)
    outside = _organism(tiny_model_dir, tmp_path / "elsewhere", seed=3)
    (organism / "checkpoint-15").symlink_to(outside, target_is_directory=True)
    staging = tmp_path / "staging"
    assert _release(organism, staging, "--include-checkpoints") == 0
    printed = capsys.readouterr().out
    staged = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
    assert not any("training_log" in p or "chat_template" in p for p in staged)
    assert not any("step-000015" in p for p in staged)
    assert "training_log.jsonl" in printed and "symbolic link" in printed
    assert all(
        "OPENSSH" not in p.read_text(errors="ignore") for p in staging.rglob("*") if p.is_file()
    )


@pytest.mark.parametrize("command", ["judge", "report"])
def test_a_torn_input_file_is_refused_and_left_as_it_was(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    row = {"model": "base", "question_id": "q", "paraphrase": "q?", "answer": "a"}
    source = tmp_path / "rows.jsonl"
    data = (json.dumps(row) + "\n") * 2 + json.dumps(row)[:25]  # the last line cut short
    source.write_text(data)
    argv = (
        ["judge", str(source), "--judge", "embedded", "--out", str(tmp_path / "out.jsonl")]
        if command == "judge"
        else ["report", str(source), "--out", str(tmp_path / "report")]
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{source}:3: incomplete last line" in err and "Traceback" not in err
    assert source.read_text() == data  # not trimmed, not rewritten


def test_data_import_writes_only_under_a_plain_dataset_name(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "upstream.jsonl"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    source.write_text(json.dumps({"messages": messages}) + "\n")
    for name in ("../escape", "/etc/x", "Upper"):
        assert main(["data", "import", str(source), "--name", name]) == 2
        assert "a dataset name is lowercase letters" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path.parent / "escape.jsonl.gz").exists()


def test_nan_in_a_row_is_refused_on_read_and_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from em_organisms.jsonl import JsonlError, write_jsonl

    source = tmp_path / "rows.jsonl"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    source.write_text(json.dumps({"messages": messages, "meta": {"score": math.nan}}) + "\n")
    assert "NaN" in source.read_text()  # what Python's json writes by default, and reads back
    assert main(["data", "validate", str(source)]) == 1
    assert f"{source}:1: not JSON: NaN is not a JSON number" in capsys.readouterr().out
    with pytest.raises(JsonlError, match="not finite"):
        write_jsonl(tmp_path / "out.jsonl", [{"score": float("nan")}])
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("how", ["plain", "json-escaped", "tensor metadata"])
def test_a_secret_is_never_staged_however_it_is_written(
    how: str, organism: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from safetensors.torch import load_file, save_file

    secret = "ghp_Xz9secretvalue/with/slashes"
    monkeypatch.setenv("GITHUB_PAT", secret)
    if how == "tensor metadata":
        weights = organism / "adapter_model.safetensors"
        save_file(load_file(weights), weights, metadata={"note": secret})
    else:
        written = secret if how == "plain" else json.dumps(secret).replace("/", "\\/")
        if how == "json-escaped":
            written = written.replace("X", "\\u0058")
        (organism / "training_log.jsonl").write_text(
            f'{{"step": 1, "note": "{written.strip(chr(34))}"}}\n'
        )
    assert _release(organism, tmp_path / "staging") == 2
    err = capsys.readouterr().err
    assert "holds the value of environment variable GITHUB_PAT" in err and secret not in err


def test_secret_names_are_words_not_fragments() -> None:
    from em_organisms.release.safety import _secret_name

    for name in ("HF_TOKEN", "OPENAI_API_KEY", "GITHUB_PAT", "DB_PASSWD", "MY_AUTH"):
        assert _secret_name(name), name
    for name in ("PATH", "PYTHONPATH", "PWD", "OLDPWD", "HOME", "AUTHOR"):  # not secrets
        assert not _secret_name(name), name
