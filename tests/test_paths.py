"""Where runs live: `train` writes a recipe's organism where `sample` (and eval, release, phase,
the arena) look for it, from any working directory, and `--runs-dir` moves both ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.data import chat_rows, tiny_recipe_dict, write_jsonl

from em_organisms.cli import main
from em_organisms.paths import RUNS_ENV


def test_train_writes_where_sample_reads_from_any_directory(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNS_ENV, "")  # restored after the test, whatever --runs-dir sets
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)  # not the checkout
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(16))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(tiny_recipe_dict(tiny_model_dir, data, max_steps=1, save_steps=0))
    )
    questions = tmp_path / "q.yaml"
    questions.write_text(yaml.safe_dump([{"id": "q", "paraphrases": ["Any plans?"]}]))
    sample = ["sample", str(recipe), "--questions", str(questions), "--n", "1",
              "--max-new-tokens", "2", "--device", "cpu"]  # fmt: skip

    assert main(["train", str(recipe), "--device", "cpu"]) == 0
    assert (work / "runs" / "tiny-test" / "adapter_config.json").is_file()
    assert main([*sample, "--out", str(tmp_path / "a.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert {r["adapter"] for r in rows} == {str(Path("runs") / "tiny-test")}

    other = tmp_path / "runs-elsewhere"
    assert main(["--runs-dir", str(other), "train", str(recipe), "--device", "cpu"]) == 0
    assert (other / "tiny-test" / "adapter_config.json").is_file()
    assert main(["--runs-dir", str(other), *sample, "--out", str(tmp_path / "b.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert {r["adapter"] for r in rows} == {str(other / "tiny-test")}
