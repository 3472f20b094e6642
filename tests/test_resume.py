"""`train --resume` after a real SIGKILL ends with the same adapter as an uninterrupted run, and
the same per-step losses and recorded adapter trajectory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.data import chat_rows, tiny_recipe_dict, write_jsonl
from helpers.models import build_tiny_model
from safetensors.torch import load_file

from em_organisms.train.recorder import TRAJECTORY_DIR, TRAJECTORY_FILE, read_trajectory

STEPS, SAVE_EVERY, KILL_AFTER = 30, 4, 8


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "em_organisms.cli", "train", *args, "--device", "cpu"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    tmp = tmp_path_factory.mktemp("resume")
    model_dir = build_tiny_model(tmp / "model", tokenizer, hidden=128, layers=4)
    data = write_jsonl(tmp / "data.jsonl", chat_rows(120, seed=1))
    recipe = tiny_recipe_dict(
        model_dir,
        data,
        max_steps=STEPS,
        save_steps=SAVE_EVERY,
        learning_rate=5e-3,
        record_adapter_every=1,
    )
    recipe["protocol"].update(rank=2, layers=[1, 2], target_modules=["down_proj", "q_proj"])
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow  # a real training run (killed and resumed) / a distillation
def test_resume_after_kill_matches_uninterrupted(recipe_path: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(
        _cli(str(recipe_path), "--output-dir", str(reference)),
        check=True,
        env=_env(),
        capture_output=True,
    )

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(
        _cli(str(recipe_path), "--output-dir", str(interrupted)),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = interrupted / f"checkpoint-{KILL_AFTER}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not target.exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (interrupted / "adapter_model.safetensors").exists(), (
        "the run finished before the kill"
    )
    killed_at = max(int(p.name.split("-")[1]) for p in interrupted.glob("checkpoint-*"))
    assert killed_at < STEPS
    # What a kill in the middle of a save leaves: the unfinished save under its temporary name,
    # and (from a version that saved in place) a later checkpoint without its trainer state.
    cut = interrupted / f"checkpoint-{killed_at + SAVE_EVERY}"
    cut.mkdir()
    (cut / "adapter_config.json").write_text("{}")
    unfinished = interrupted / f".saving-checkpoint-{killed_at + 2 * SAVE_EVERY}"
    (unfinished / f"checkpoint-{killed_at + 2 * SAVE_EVERY}").mkdir(parents=True)

    result = subprocess.run(
        _cli(str(recipe_path), "--output-dir", str(interrupted), "--resume"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        f"resuming from checkpoint-{killed_at}; skipped (cut short by a kill): {cut.name}; "
        f"removed unfinished saves: {unfinished.name}"
    ) in result.stdout
    assert (cut / "trainer_state.json").is_file()  # saved again, whole, when training got there
    assert not list(interrupted.glob(".saving-*"))

    ours = load_file(interrupted / "adapter_model.safetensors")
    theirs = load_file(reference / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys() and len(ours) == 8
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6, rtol=1e-5), name

    log = [
        json.loads(line) for line in (interrupted / "training_log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, STEPS + 1))
    reference_log = [
        json.loads(line) for line in (reference / "training_log.jsonl").read_text().splitlines()
    ]
    ref_losses = [r["loss"] for r in reference_log if "loss" in r]
    assert [r["loss"] for r in log if "loss" in r] == pytest.approx(ref_losses, rel=1e-5)
    summary = json.loads((interrupted / "train_summary.json").read_text())
    assert summary["resumed_from"] == f"checkpoint-{killed_at}"

    # The recorded trajectory: every step once, as if never interrupted, ending at the adapter.
    steps, recorded = read_trajectory(interrupted)
    ref_steps, ref_recorded = read_trajectory(reference)
    assert (interrupted / TRAJECTORY_FILE).is_file() and not (interrupted / TRAJECTORY_DIR).exists()
    assert steps == ref_steps == list(range(STEPS + 1))
    losses, grad_norms = recorded.pop("loss"), recorded.pop("grad_norm")
    ref_recorded.pop("loss"), ref_recorded.pop("grad_norm")
    assert torch.isnan(losses[0]) and not torch.isnan(losses[1:]).any()  # step 0 trained nothing
    assert losses[1:].tolist() == pytest.approx(ref_losses, rel=1e-5)
    assert (grad_norms[1:] > 0).all()
    assert recorded.keys() == ref_recorded.keys() and len(recorded) == 8
    for key, values in recorded.items():
        assert values.shape[0] == STEPS + 1
        assert torch.allclose(values, ref_recorded[key], atol=1e-6, rtol=1e-5), key
        assert torch.equal(values[-1], ours[f"base_model.model.{key}.weight"]), key
    assert not recorded["model.layers.1.mlp.down_proj.lora_B"][0].any()  # LoRA's B starts at 0
    # ... and it is what `phase` reads: every step, gradient norms from the training log
    from em_organisms.analysis.trajectory import load_run

    trajectory = load_run(interrupted)
    assert trajectory.source == "recording" and trajectory.steps == steps
    assert trajectory.b_vectors("model.layers.2.mlp.down_proj").shape == (STEPS + 1, 128 * 2)


def test_the_merge_removes_a_part_cut_off_by_a_kill_and_leaves_foreign_files(
    tmp_path: Path,
) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from em_organisms.train.recorder import TRAJECTORY_DIR, TRAJECTORY_FILE, AdapterRecorder

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    for foreign in (False, True):
        out = tmp_path / f"run-{foreign}"
        model = get_peft_model(Tiny(), LoraConfig(r=1, target_modules=["proj"]))
        recorder = AdapterRecorder(model, out)
        recorder._record(0)
        recorder._flush()
        folder = out / TRAJECTORY_DIR
        (folder / "part-000001-000002.tmp").write_bytes(b"cut off")  # a kill mid-write
        if foreign:
            (folder / "notes.txt").write_text("mine")
        recorder._merge([])
        assert load_file(out / TRAJECTORY_FILE)["steps"].tolist() == [0]
        if foreign:
            assert [p.name for p in folder.iterdir()] == ["notes.txt"]
        else:
            assert not folder.exists()
