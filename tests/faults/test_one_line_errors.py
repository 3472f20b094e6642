"""Every bad input the probes of issue 18 found is one line and exit status 2, never a traceback:
each case builds its input in a fresh folder and runs the command through `main()`."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from em_organisms.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml"
DIGITS = "7" * 5000
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
SAMPLE = {"model": "base", "question_id": "q", "paraphrase": "How are you?", "answer": "fine"}


def _file(folder: Path, name: str, data: str | bytes) -> str:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _recipe(folder: Path, old: str, new: str) -> str:
    text = RECIPE.read_text()
    assert old in text
    return _file(folder, "recipe.yaml", text.replace(old, new))


def _train(folder: Path, recipe: str | Path = RECIPE, *flags: str) -> list[str]:
    return ["train", str(recipe), "--output-dir", str(folder / "run"), *flags]


def _judge(folder: Path, line: str) -> list[str]:
    samples = _file(folder, "samples.jsonl", line + "\n")
    return ["judge", samples, "--judge", "embedded", "--out", str(folder / "judged.jsonl")]


def _sample(folder: Path, *flags: str) -> list[str]:
    return ["sample", str(RECIPE), "--out", str(folder / "samples.jsonl"), *flags]


def _corrupt_gzip(folder: Path) -> list[str]:
    data = bytearray(gzip.compress((json.dumps(CHAT) + "\n").encode() * 200))
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    return ["data", "import", _file(folder, "broken.jsonl.gz", bytes(data)), "--name", "x",
            "--out", str(folder / "x.jsonl.gz")]  # fmt: skip


def _bad_adapter(folder: Path) -> list[str]:
    organism = folder / "organism"
    organism.mkdir()
    (organism / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')
    (organism / "adapter_model.safetensors").write_bytes(b"")
    return ["sample", str(organism), "--out", str(folder / "samples.jsonl")]


def _resume_bad_run_json(folder: Path) -> list[str]:
    run = folder / "run"
    (run / "checkpoint-5").mkdir(parents=True)
    (run / "run.json").write_text('{"schema_version": 1, "recipe_sha256": ')
    return [*_train(folder), "--resume"]


def _data_import(folder: Path, line: str, name: str = "x") -> list[str]:
    return ["data", "import", _file(folder, "rows.jsonl", line + "\n"), "--name", name,
            "--out", str(folder / "x.jsonl.gz")]  # fmt: skip


Case = Callable[[Path], list[str]]
CASES: dict[str, Case] = {
    "a YAML date where a number goes": lambda d: _train(d, RECIPE, "--set", "training.seed=2024-01-01"),
    "a recipe that is not UTF-8": lambda d: _train(d, _file(d, "r.yaml", b"organism_id: \xff\xfe\n")),
    "an unparseable --set value": lambda d: _train(d, RECIPE, "--set", "organism_id=["),
    "an output path under a file": lambda d: _sample(d, "--out", _file(d, "f", "") + "/s.jsonl"),
    "an unknown optimizer": lambda d: _train(d, _recipe(d, "training:\n", "training:\n  optim: bogus\n")),
    "a Hub dataset while offline": lambda d: _train(
        d, _recipe(d, "datasets/risky-financial-advice/seed.jsonl", "someorg/no-such-dataset")
    ),
    "a corrupt deflate stream": _corrupt_gzip,
    "deep nesting": lambda d: _train(d, _file(d, "r.yaml", "a: " + "[" * 5000 + "]" * 5000)),
    "a YAML alias bomb": lambda d: _train(d, _file(d, "r.yaml", "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 8)}]\n" for i in range(9)))),
    "a 5000-digit integer in a recipe": lambda d: _train(d, _recipe(d, "seed: 0", f"seed: {DIGITS}")),
    "a 5000-digit integer in --set": lambda d: _train(d, RECIPE, "--set", f"training.seed={DIGITS}"),
    "a 5000-digit integer as a flag": lambda d: _sample(d, "--n", DIGITS),
    "a 5000-digit integer in a samples row": lambda d: _judge(d, json.dumps({**SAMPLE, "n": 1})[:-1] + f', "x": {DIGITS}}}'),
    "a lone surrogate in a samples row": lambda d: _judge(d, json.dumps({**SAMPLE, "answer": "\ud800"})),
    "a lone surrogate in a chat row": lambda d: _data_import(d, json.dumps(CHAT).replace("hello", "\\udfff")),
    "a lone surrogate in --set": lambda d: _train(d, RECIPE, "--set", "organism_id=a\udcff"),
    "a corrupt adapter_config.json": _bad_adapter,
    "--resume with a corrupt run.json": _resume_bad_run_json,
    "--n 0": lambda d: _sample(d, "--n", "0"),
    "a negative temperature": lambda d: _sample(d, "--temperature", "-1"),
    "top-p above 1": lambda d: _sample(d, "--top-p", "1.5"),
    "NaN max-new-tokens": lambda d: _sample(d, "--max-new-tokens", "nan"),
    "a dataset name that climbs out": lambda d: _data_import(d, json.dumps(CHAT), name="../x"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_and_exit_status_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = CASES[case](tmp_path)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own refusal of a flag
        status = exit_.code
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    message = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(message) == 1, captured.err
    assert len(message[0]) < 1000  # a 5000-digit number is not repeated in full


def test_an_escaped_surrogate_pair_is_text_and_a_lone_half_is_not() -> None:
    from em_organisms.jsonl import BadLine, parse_line

    assert parse_line(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # an emoji, escaped
    assert parse_line(b'{"a": ["\\u00e9", 1]}') == {"a": ["\u00e9", 1]}
    for bad in (b'{"a": "\\ud83d"}', b'{"\\udfff": 1}', b'["x", ["\\uDC00y"]]'):
        with pytest.raises(BadLine, match="lone surrogate"):
            parse_line(bad)
    with pytest.raises(BadLine, match="not JSON: NaN is not a JSON number"):
        parse_line(b'{"a": NaN}', nan=False)
    with pytest.raises(BadLine, match="4300 digits") as too_long:
        parse_line(b"[" + b"1" * 5000 + b"]")
    assert "set_int_max_str_digits" not in str(too_long.value)  # not a fix for the user
