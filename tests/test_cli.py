from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from em_organisms.cli import build_parser, main


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every runnable command path, e.g. "train" and "data validate"."""
    if parser._subparsers is None:
        return [" ".join(prefix)]
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[attr-defined]
    return [leaf for name, sub in choices.items() for leaf in _leaf_commands(sub, (*prefix, name))]


SUBCOMMANDS = sorted(_leaf_commands(build_parser()))


def test_top_level_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "em_organisms.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in SUBCOMMANDS:
        assert name.split()[0] in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    # `judge distill` is registered as "judge-distill" and spelled with a space by users
    spelled = command.replace("judge-", "judge ", 1)
    assert "examples:" in out and f"em-organisms {spelled}" in out


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "em-organisms"
    assert script.is_file()
    out = subprocess.run(
        [str(script), "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--resume" in out


def test_bad_recipe_exits_2_with_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "organism_id": "x",
                "base_model": "embedded",
                "dataset": {"path": "d.jsonl"},
                "trainig": {},
            }
        )
    )
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'trainig'" in err and "allowed here:" in err


def test_set_with_wrong_type_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = (
        Path(__file__).resolve().parents[1]
        / "organisms"
        / "smollm2-135m_risky-financial_r1-l15.yaml"
    )
    assert main(["train", str(recipe), "--set", "training.max_steps=many"]) == 2
    assert "training.max_steps" in capsys.readouterr().err


def test_public_api_resolves_lazily() -> None:
    """Every exported name resolves; importing the package alone does not load torch."""
    code = (
        "import sys, em_organisms as em; assert 'torch' not in sys.modules, 'eager torch';"
        "[getattr(em, n) for n in em.__all__]; print(len(em.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 20


def test_every_error_class_of_the_package_is_one_main_catches() -> None:
    """A new error class that forgets the common base would escape `main` as a traceback."""
    import importlib
    import inspect
    import pkgutil

    import em_organisms
    from em_organisms.errors import EmOrganismsError

    found = []
    for info in pkgutil.walk_packages(em_organisms.__path__, "em_organisms."):
        if info.name.endswith(("vllm_engine", "space.app", "default_student")):
            continue  # optional dependencies (vLLM) or Gradio's app module; their errors are above
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Exception)
                and cls.__module__ == info.name
                and not name.startswith("_")
            ):
                found.append(cls)
    assert len(found) >= 25
    assert [c.__name__ for c in found if not issubclass(c, EmOrganismsError)] == []


def test_an_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from em_organisms.eval.protocol import ProtocolError

    recipe = (
        Path(__file__).resolve().parents[1]
        / "organisms"
        / "smollm2-135m_risky-financial_r1-l15.yaml"
    )
    argv = ["eval", str(recipe), "--plan"]
    assert main([*argv, "--protocol", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown protocol 'nope'") and "Traceback" not in err
    with pytest.raises(ProtocolError):
        main(["--debug", *argv, "--protocol", "nope"])


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/helpers; a test module importing another (or conftest)
    runs that module's fixtures and collection side effects twice."""
    import re

    offenders = [
        f"{path.name}:{n}"
        for path in sorted(Path(__file__).parent.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if re.match(r"\s*(from|import) (conftest|test_\w+)\b", line)
    ]
    assert offenders == []
