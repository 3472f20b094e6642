"""Bad input is one clear line, never a traceback, a hang or a memory blow-up (issue 18, item 10
and the traceback list): bombs are shaped like the real ones, kept small."""

from __future__ import annotations

import gzip
import json
import resource
from pathlib import Path

import pytest
from helpers.paths import REPO_ROOT

from em_organisms.cli import main

DEMO_RECIPE = REPO_ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml"


def _alias_bomb(levels: int = 12) -> str:
    """Billion laughs: each anchor is a list of nine references to the one before."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _train(recipe: Path, tmp_path: Path, *extra: str) -> int:
    return main(["train", str(recipe), "--output-dir", str(tmp_path / "out"), *extra])


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


def test_a_yaml_alias_bomb_is_refused_quickly_and_small(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(DEMO_RECIPE.read_text() + _alias_bomb())
    from em_organisms.recipes import RecipeError, load_recipe

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RecipeError):
        load_recipe(recipe)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100  # expanded, it would be 9**12 strings
    assert _train(recipe, tmp_path) == 2
    assert "values once its aliases are expanded" in _one_line_error(capsys)
    few = tmp_path / "few.yaml"  # the same shape with many aliases: refused on their number
    few.write_text(
        DEMO_RECIPE.read_text()
        + _alias_bomb(levels=4) * 1
        + "".join(f"z{i}: *a0\n" for i in range(120))
    )
    assert _train(few, tmp_path) == 2
    assert "more than 100 aliases" in _one_line_error(capsys)


def test_deep_nesting_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert _train(recipe, tmp_path) == 2
    assert "nested deeper than 50 levels" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "text, says",
    [
        (b"organism_id: \xff\xfe\n", "not UTF-8 text"),
        (b"- just\n- a list\n", "a recipe must be a YAML mapping, got list"),
    ],
)
def test_a_recipe_that_is_not_text_or_not_a_mapping_is_one_line(
    text: bytes, says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text)
    assert _train(recipe, tmp_path) == 2
    assert says in _one_line_error(capsys)


def test_a_date_where_a_number_goes_is_a_type_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _train(DEMO_RECIPE, tmp_path, "--set", "training.seed=2024-01-01") == 2
    assert "training.seed: Input should be a valid integer" in _one_line_error(capsys)


def test_an_unparseable_set_value_says_how_to_quote_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _train(DEMO_RECIPE, tmp_path, "--set", "organism_id=[") == 2
    err = _one_line_error(capsys)
    assert "--set organism_id=[" in err and "not valid YAML" in err and "quote" in err


def _row(text: str) -> bytes:
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]
    return (json.dumps({"messages": messages}) + "\n").encode()


def test_a_gzip_bomb_is_streamed_and_an_overlong_row_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from em_organisms.data import schema

    monkeypatch.setattr(schema, "MAX_ROW_BYTES", 4096)  # the default is 1 MiB: lowered, same shape
    bomb = tmp_path / "rows.jsonl.gz"
    with gzip.open(bomb, "wb") as out:  # 2 rows, one 300 MB line of nothing, 1 more row
        out.write(_row("fine") + _row("also fine"))
        chunk = b" " * (1 << 20)
        for _ in range(300):
            out.write(chunk)
        out.write(b"\n" + _row("after"))
    assert bomb.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["data", "validate", str(bomb)]) == 1
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100
    out = capsys.readouterr()
    assert f"{bomb}:3: line longer than 4096 bytes" in out.out + out.err
    assert "Traceback" not in out.err


def test_a_corrupt_gzip_stream_names_the_line_it_stopped_at(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = gzip.compress(_row("one") + _row("two") * 2000)
    broken = tmp_path / "rows.jsonl.gz"
    broken.write_bytes(good[: len(good) // 2] + b"\\x00garbage" * 50)
    assert main(["data", "validate", str(broken)]) == 1
    out = capsys.readouterr()
    assert "corrupt or truncated gzip stream" in out.out + out.err
    assert "Traceback" not in out.err


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_an_output_path_that_cannot_be_written_is_one_line(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "samples.jsonl" if where == "under a file" else tmp_path
    argv = ["sample", "embedded", "--questions", "general", "--n", "1", "--max-new-tokens", "2",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = _one_line_error(capsys)  # refused before the model loaded: nothing else was printed
    says = "is a file, not a folder" if where == "under a file" else "a folder; name a file"
    assert says in err and str(tmp_path) in err
    assert blocker.read_text() == "not a folder"


PEAK_RSS = """
import resource, sys
from em_organisms.cli import main
status = main(sys.argv[1:])
print("peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "status", status)
"""


def _gzip_bomb(folder: Path) -> list[str]:
    bomb = folder / "rows.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as out:  # a 300 MB line between good rows
        out.write(_row("fine"))
        chunk = b" " * (1 << 20)
        for _ in range(300):
            out.write(chunk)
        out.write(b"\n" + _row("after"))
    return ["data", "validate", str(bomb)]


def _long_row(folder: Path) -> list[str]:
    rows = folder / "rows.jsonl"
    rows.write_bytes(_row("fine") + _row("x" * 50_000_000) + _row("after"))  # one 50 MB row
    return ["data", "validate", str(rows)]


def _alias_bomb_recipe(folder: Path) -> list[str]:
    recipe = folder / "bomb.yaml"
    recipe.write_text(DEMO_RECIPE.read_text() + _alias_bomb())
    return ["train", str(recipe), "--output-dir", str(folder / "out")]


@pytest.mark.parametrize("bomb", [_gzip_bomb, _long_row, _alias_bomb_recipe])
def test_each_bomb_stays_under_1_gib_with_default_limits(bomb, tmp_path: Path) -> None:
    """The issue's target, measured in a process of its own (imports included), at the limits a
    user gets: the bombs above lower them to stay small in the suite."""
    import subprocess
    import sys

    argv = bomb(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    peak_kib, status = done.stdout.split("peak_kib ")[1].split(" status ")
    assert int(status) in (1, 2)  # data validate answers 1; train refuses the recipe with 2
    print(f"{bomb.__name__}: peak {int(peak_kib) / 1024:.0f} MiB")
    assert int(peak_kib) < 1 << 20, f"{int(peak_kib) / 1024:.0f} MiB"
