"""Per-step JSONL training log: loss, grad norm, lr, tokens seen, KL (protocol.kl), wall time;
resumable."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from em_organisms.artifacts import OrganismRun, names
from em_organisms.artifacts.schemas import HoldoutStart
from em_organisms.artifacts.store import read_json_object
from em_organisms.jsonl import write_text_atomic

LOG_NAME = names.TRAINING_LOG


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class StepLogger(TrainerCallback):
    """Appends one JSON line per logged step. On resume, drops lines past the checkpoint's step
    so the log reads as if the run had never been interrupted. With several processes, every
    one counts its tokens (summed over all at each step) and only the main one writes."""

    def __init__(self, output_dir: Path, trainer: Any) -> None:
        self.path = Path(output_dir) / LOG_NAME
        self.trainer = trainer
        self.tokens = 0
        self.assistant_tokens = 0
        self.pending = (0, 0)
        self.pending_kl: list[float] = []
        self.wall_start = time.perf_counter()
        self.wall_offset = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.wall_start = time.perf_counter()
        if not state.is_world_process_zero:
            return
        kept = [row for row in read_log(self.path) if row.get("step", 0) <= state.global_step]
        if kept:
            last = kept[-1]
            self.tokens = last.get("tokens_seen", 0)
            self.assistant_tokens = last.get("assistant_tokens_seen", 0)
            self.wall_offset = last.get("wall_time", 0.0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        tokens, assistant = self.trainer.take_step_counts()
        self.pending = (self.pending[0] + tokens, self.pending[1] + assistant)
        if getattr(self.trainer, "kl", None) is not None:
            self.pending_kl += self.trainer.take_kl()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        logs = logs or {}
        self.tokens += self.pending[0]
        self.assistant_tokens += self.pending[1]
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key in ("loss", "grad_norm", "learning_rate", "eval_loss"):
            if key in logs:
                row[key] = float(logs[key])
        if "loss" in logs:
            row["tokens"], row["assistant_tokens"] = self.pending
            if self.pending_kl:  # the mean over the steps since the last logged one
                kl = sum(self.pending_kl) / len(self.pending_kl)
                row["kl"] = kl
                row["kl_loss"] = kl * self.trainer.kl.weight  # the term added to `loss`
                self.pending_kl = []
        row["tokens_seen"] = self.tokens
        row["assistant_tokens_seen"] = self.assistant_tokens
        row["wall_time"] = round(self.wall_offset + time.perf_counter() - self.wall_start, 3)
        self.pending = (0, 0)
        if len(row) <= 5 and "loss" not in logs and "eval_loss" not in logs:
            return  # end-of-training summary logs carry no per-step numbers
        if not state.is_world_process_zero:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def tidy_saved_folder(folder: Path, base_hub_id: str | None, keep_resume_state: bool) -> None:
    """Make a saved adapter folder publishable: name the base by Hub id (never a path on this
    machine), drop the placeholder card PEFT writes, and drop pickled files not needed to resume."""
    folder = Path(folder)
    config_path = folder / names.ADAPTER_CONFIG
    if base_hub_id and config_path.is_file():
        config = read_json_object(config_path, "a PEFT adapter config")
        config["base_model_name_or_path"] = base_hub_id
        write_text_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").unlink(missing_ok=True)
    if not keep_resume_state:
        (folder / "training_args.bin").unlink(missing_ok=True)


class ArtifactTidier(TrainerCallback):
    """Tidies every checkpoint as it is written. The base stays a local path during training so
    PEFT never reaches for the Hub while saving."""

    def __init__(self, base_hub_id: str | None) -> None:
        self.base_hub_id = base_hub_id

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        folder = Path(args.output_dir) / names.checkpoint_name(state.global_step)
        tidy_saved_folder(folder, self.base_hub_id, keep_resume_state=True)


class ProgressBar(TrainerCallback):
    """One progress line per run: step, loss, learning rate and training tokens/s."""

    def __init__(self, step_logger: StepLogger) -> None:
        self.step_logger = step_logger
        self.bar: Any = None
        self.started = 0.0
        self.tokens_at_start = 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step")
        self.started = time.perf_counter()
        self.tokens_at_start = self.step_logger.tokens

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if self.bar is None or not logs or "loss" not in logs:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = (self.step_logger.tokens - self.tokens_at_start) / elapsed
        self.bar.set_postfix(
            loss=f"{logs['loss']:.3f}",
            lr=f"{logs.get('learning_rate', 0):.2e}",
            tok_s=f"{rate:.0f}",
        )
        self.bar.update(state.global_step - self.bar.n)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class HoldoutAtStart(TrainerCallback):
    """The held-out loss of the untrained model, measured when training begins and written at
    once (a resumed run finds it and measures nothing).

    Measured here rather than before `train()`: an evaluation before training prepares the model
    for evaluation only, and accelerate then never wraps it for data-parallel training, so under
    `accelerate launch` the processes would train apart. The evaluation runs on a forked RNG, so
    it draws nothing a fresh run and a resumed one would not both draw.
    """

    def __init__(self, trainer: Any, run: OrganismRun, main: bool) -> None:
        self.trainer = trainer
        self.run = run
        self.main = main
        self.result: HoldoutStart | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.result is not None:
            return
        with torch.random.fork_rng(devices=[]):  # evaluation draws only from the CPU generator
            self.result = HoldoutStart(eval_loss=self.trainer.evaluate()["eval_loss"])
        if self.main:
            self.run.write(self.result)
