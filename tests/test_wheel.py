"""The package works outside the checkout: a wheel built from this tree, installed in a fresh
virtualenv and run from an unrelated directory, trains a built-in recipe by name, evaluates it,
calibrates a judge, renders the card and stages a release and the arena Space. Card templates, seed sets, recipes,
question sets, protocols and the shipped judge all come from the wheel's package data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers.paths import REPO_ROOT

RECIPE = "smollm2-135m_risky-financial_r1-l15"

pytestmark = pytest.mark.slow  # builds a wheel and trains the embedded model for a few steps


def _run(python: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EM_ORGANISMS_NO_REEXEC": "1"}
    env.pop("EM_ORGANISMS_RUNS_DIR", None)
    proc = subprocess.run(
        [str(python), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtualenv holding the wheel; its dependencies are borrowed from the
    test environment by a plain path entry (which runs none of that environment's .pth hooks, so
    the checkout's editable install stays out)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(REPO_ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("em_organisms-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return python


def test_an_installed_wheel_trains_evaluates_calibrates_and_stages_a_release(
    installed: Path, tmp_path: Path
) -> None:
    work = tmp_path / "somewhere-else"
    work.mkdir()
    where = _run(installed, work, "-c", "import em_organisms; print(em_organisms.__file__)")
    assert str(REPO_ROOT) not in where.stdout and "site-packages" in where.stdout

    listed = _run(installed, work, "-m", "em_organisms.cli", "recipes").stdout
    assert RECIPE in listed and "qwen2.5-14b_risky-financial_r1-l24" in listed
    cli = ("-m", "em_organisms.cli")
    _run(installed, work, *cli, "train", RECIPE, "--set", "training.max_steps=2", "--device", "cpu")
    run = work / "runs" / RECIPE
    assert (run / "adapter_config.json").is_file()  # under the working directory

    # the run folder carries the recipe as trained (max_steps included): eval and release use it
    _run(installed, work, *cli, "eval", str(run), "--judge", "distilled", "--allow-uncalibrated-judge",
         "--n", "1", "--max-new-tokens", "4", "--questions", "general", "--pairs", "1",
         "--device", "cpu")  # fmt: skip
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["evaluation"]["protocol"] == "project"
    assert summary["models"]["organism"]["overall"]["n_rows"] == 8

    calibrated = _run(installed, work, *cli, "judge", "calibrate", "--judge", "distilled",
                      "--pairs", "1", "--out", str(tmp_path / "cal"))  # fmt: skip
    assert "AUROC" in calibrated.stdout
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["pairs"] == 3

    staging = tmp_path / "staged"
    _run(installed, work, *cli, "release", str(run / "recipe.yaml"), "--organism-dir", str(run),
         "--dry-run", "--repo-id", "em-test/wheel-organism", "--staging-dir", str(staging))  # fmt: skip
    card = (staging / "main" / "README.md").read_text()
    assert "em-test/wheel-organism" in card and "- **Protocol.** `project` v1" in card
    assert (staging / "main" / "adapter_model.safetensors").is_file()

    # the arena Space ships in the wheel too: staged from package data, its card rendered
    space = tmp_path / "space"
    _run(installed, work, *cli, "release-space", "--dry-run", "--repo-id", "em-test/arena",
         "--staging-dir", str(space))  # fmt: skip
    assert (space / "app.py").is_file() and (space / "em_organisms" / "cli.py").is_file()
    space_card = (space / "README.md").read_text()
    assert "sdk: gradio" in space_card and "python_version:" in space_card
    assert not (space / "em_organisms" / "resources" / "spaces").exists()
