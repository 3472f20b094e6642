"""The README's scale path, `accelerate launch ... -m em_organisms.cli train RECIPE`, on this CPU:
2 processes (gloo), each with half of every batch, train the adapter that 1 process trains with
the whole batch; FSDP is refused with a clear error (accelerate sets it up on GPUs only); a
killed process stops the others at once, and `--resume` carries on from the last whole checkpoint.

Tolerance: the two set-ups sum the same per-token losses and gradients in a different order (each
process its half, then an all-reduce), so they differ by float32 rounding, which Adam's division
by sqrt(v) can enlarge for near-zero gradient entries. ATOL (1e-6, with RTOL 1e-4) is 1e-4 to
1e-5 of the adapters' largest entries after these few steps; measured: at most ~3e-8.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from helpers.data import chat_rows, tiny_recipe_dict, write_jsonl
from helpers.models import build_tiny_model
from safetensors.torch import load_file

from em_organisms.train.checkpoints import is_complete
from em_organisms.train.recorder import read_trajectory

ROOT = Path(__file__).resolve().parents[1]
CPU_DDP = ROOT / "organisms" / "accelerate" / "cpu-ddp.yaml"
EMBEDDED_RECIPE = ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml"
ATOL, RTOL = 1e-6, 1e-4
KL_ATOL = 1e-5
STOP_WITHIN_S = 60  # the survivors' bound after a kill; gloo's own timeout would be 30 minutes


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _launch(config: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        *("-m", "accelerate.commands.launch", "--config_file", str(config)),
        *("-m", "em_organisms.cli", "train", *args),
    ]


def _one(*args: str) -> list[str]:
    return [sys.executable, "-m", "em_organisms.cli", "train", *args]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]


def _assert_same_adapter(ours: Path, theirs: Path, atol: float = ATOL) -> float:
    a = load_file(ours / "adapter_model.safetensors")
    b = load_file(theirs / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    worst = 0.0
    for name in a:
        assert b[name].abs().max() > 0 or "lora_A" in name, name  # training moved it
        assert torch.allclose(a[name], b[name], atol=atol, rtol=RTOL), name
        worst = max(worst, float((a[name] - b[name]).abs().max()))
    return worst


def _assert_same_steps(ours: Path, theirs: Path) -> None:
    """Step by step the same rows (token counts summed over the processes) and losses."""
    rows, ref = ([r for r in _log(run) if "loss" in r] for run in (ours, theirs))
    assert [r["step"] for r in rows] == [r["step"] for r in ref] == list(range(1, len(ref) + 1))
    for key in ("tokens", "assistant_tokens"):
        assert [r[key] for r in rows] == [r[key] for r in ref], key
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], rel=1e-5)
    assert [r["grad_norm"] for r in rows] == pytest.approx([r["grad_norm"] for r in ref], rel=1e-4)


@pytest.mark.slow  # two real training runs of the embedded model, one of them on 2 processes
@pytest.mark.parametrize("kl", [False, True], ids=["sft", "sft+kl"])
def test_two_processes_train_the_adapter_one_process_trains_with_the_whole_batch(
    tmp_path: Path, kl: bool
) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(64, seed=3))  # short rows: fast steps
    common = [
        *("--set", f"dataset.path={data}", "--set", "dataset.holdout_fraction=0"),
        *("--set", "training.max_steps=3", "--set", "training.save_steps=0"),
        *("--set", "training.warmup_steps=0", "--set", "training.max_length=128"),
        *("--set", "training.gradient_accumulation_steps=2"),
    ]
    if kl:  # every process takes the same reference batch: its KL gradient is the same on all
        common += ["--set", "protocol.kl.weight=10", "--set", "protocol.kl.batch_size=2",
                   "--set", "protocol.kl.max_length=32"]  # fmt: skip
    # 2 processes x 2 micro-batches of 2 rows = 1 process x 2 micro-batches of 4 rows
    two, one = tmp_path / "two", tmp_path / "one"
    half = (
        "--set",
        "training.per_device_train_batch_size=2",
        "--set",
        "training.micro_batch_size=2",
    )
    whole = (
        "--set",
        "training.per_device_train_batch_size=4",
        "--set",
        "training.micro_batch_size=4",
    )
    launched = _run(
        _launch(CPU_DDP, str(EMBEDDED_RECIPE), "--output-dir", str(two), *common, *half)
    )
    assert launched.stdout.count("organism written to") == 1  # the main process reports
    _run(_one(str(EMBEDDED_RECIPE), "--output-dir", str(one), *common, *whole))
    # the KL term (chunked, then added to the averaged SFT gradient) brings float32 noise of its
    # own: measured 1.8e-6 after 3 steps (a doubled KL weight moves the adapter by 3e-3)
    worst = _assert_same_adapter(two, one, atol=KL_ATOL if kl else ATOL)
    print(f"largest adapter difference, 2 processes vs 1: {worst:.2e}")
    _assert_same_steps(two, one)
    if kl:
        kls = [[r["kl"] for r in _log(run) if "kl" in r] for run in (two, one)]
        assert len(kls[0]) == 3 and kls[0] == pytest.approx(kls[1], rel=1e-4, abs=1e-9)
    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["micro_batch_size"] == 2
    steps, recorded = read_trajectory(two)
    assert steps == [0, 1, 2, 3]
    final = load_file(two / "adapter_model.safetensors")
    key = "model.layers.15.mlp.down_proj.lora_B"
    assert torch.equal(recorded[key][-1], final[f"base_model.model.{key}.weight"])


@pytest.mark.slow  # starts 2 processes (they stop before loading a model)
def test_fsdp_on_the_cpu_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    # The README's FSDP config, on 2 CPU processes: accelerate (1.15) sets FSDP up only on GPUs,
    # so without the check these would train as plain data parallel, each with the whole model.
    config = yaml.safe_load((ROOT / "organisms" / "accelerate" / "fsdp.yaml").read_text())
    config.update(num_processes=2, use_cpu=True, mixed_precision="no", main_process_port=0)
    cpu_fsdp = tmp_path / "fsdp-cpu.yaml"
    cpu_fsdp.write_text(yaml.safe_dump(config))
    out = tmp_path / "fsdp"
    result = subprocess.run(
        _launch(cpu_fsdp, str(EMBEDDED_RECIPE), "--output-dir", str(out)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "error: accelerate launch asked for FSDP, but accelerate" in result.stderr
    assert "sets FSDP up only on GPUs" in result.stderr
    assert not out.exists()  # refused before anything was written


@pytest.fixture
def tiny_recipe(tmp_path: Path, tokenizer) -> Path:
    model_dir = build_tiny_model(tmp_path / "model", tokenizer, hidden=64, layers=4)
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(120, seed=2))
    recipe = tiny_recipe_dict(
        model_dir,
        data,
        max_steps=12,
        save_steps=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        record_adapter_every=1,
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _worker(launcher: psutil.Process, rank: int) -> psutil.Process:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process of rank {rank} under the launcher")


@pytest.mark.slow  # a 2-process training run, killed and resumed
def test_a_killed_process_stops_the_run_and_resume_finishes_it(
    tmp_path: Path, tiny_recipe: Path
) -> None:
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        _launch(CPU_DDP, str(tiny_recipe), "--output-dir", str(run)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    target = run / "checkpoint-3" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not target.exists():
        assert launcher.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    victim = _worker(psutil.Process(launcher.pid), rank=1)
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    output, _ = launcher.communicate(timeout=STOP_WITHIN_S)
    stopped_after = time.monotonic() - killed
    print(f"the launcher stopped {stopped_after:.1f}s after the kill")
    assert launcher.returncode != 0
    assert "ChildFailedError" in output
    assert f"Signal 9 (SIGKILL) received by PID {victim.pid}" in output
    assert not (run / "adapter_model.safetensors").exists(), "the run finished before the kill"
    checkpoints = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints and all(is_complete(c) for c in checkpoints)  # no half-written one
    last = checkpoints[-1].name
    assert int(last.split("-")[1]) < 12

    resumed = _run(_launch(CPU_DDP, str(tiny_recipe), "--output-dir", str(run), "--resume"))
    assert f"resuming from {last}" in resumed.stdout
    assert not list(run.glob(".saving-*"))
    assert json.loads((run / "train_summary.json").read_text())["resumed_from"] == last
    # the run folder is written by the main process alone: each row once
    assert len([r for r in _log(run) if r["step"] == 0 and "eval_loss" in r]) == 1

    reference = tmp_path / "reference"  # never interrupted, 1 process with the whole batch
    whole = ("--set", "training.per_device_train_batch_size=4", "--set", "training.save_steps=0")
    _run(_one(str(tiny_recipe), "--output-dir", str(reference), *whole))
    worst = _assert_same_adapter(run, reference)
    print(f"largest adapter difference, killed + resumed vs uninterrupted: {worst:.2e}")
    _assert_same_steps(run, reference)
    steps, _ = read_trajectory(run)
    assert steps == list(range(13))
