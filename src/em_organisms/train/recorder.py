"""Record every adapted module's LoRA A and B while training, for the phase-transition analysis.

Every `every` optimizer steps (and at step 0) the callback copies each LoRA layer's A (r x in)
and B (out x r) to the CPU in float32. While training, records are written as parts, one
safetensors file per checkpoint save under `OUTPUT_DIR/adapter_trajectory/`, named by their first
and last step, so writing stays proportional to what is new; a resumed run drops every record
past the checkpoint it resumes from, so the trajectory reads as if the run had never stopped.
When training ends the parts become one file, `adapter_trajectory.safetensors`: `steps`, every
`<module>.lora_A` / `.lora_B` stacked over steps, and `loss` / `grad_norm` at those steps (NaN
where the step logged none).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from em_organisms.artifacts import names

TRAJECTORY_DIR = "adapter_trajectory"
TRAJECTORY_FILE = names.TRAJECTORY
logger = logging.getLogger(__name__)
PART = re.compile(r"^part-(\d{6})-(\d{6})\.safetensors$")
FORMAT = "em-organisms adapter trajectory v1"


def lora_weights(model: torch.nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """{module.lora_A / module.lora_B: weight} of every LoRA layer (module names without PEFT's
    `base_model.model.` prefix)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            short = name.removeprefix("base_model.model.")
            found[f"{short}.lora_A"] = module.lora_A[adapter].weight
            found[f"{short}.lora_B"] = module.lora_B[adapter].weight
    return found


def read_parts(folder: Path) -> tuple[list[int], dict[str, torch.Tensor]]:
    """All records under FOLDER in step order: (steps, {key: tensor of shape (records, ...)})."""
    parts = sorted(p for p in folder.glob("part-*.safetensors") if PART.match(p.name))
    steps: list[int] = []
    chunks: dict[str, list[torch.Tensor]] = {}
    for part in parts:
        tensors = load_file(part)
        steps += tensors.pop("steps").tolist()
        for key, value in tensors.items():
            chunks.setdefault(key, []).append(value)
    return steps, {key: torch.cat(values) for key, values in chunks.items()}


class AdapterRecorder(TrainerCallback):
    def __init__(self, model: torch.nn.Module, output_dir: Path, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"record every N steps needs N >= 1, got {every}")
        self.weights = lora_weights(model)
        if not self.weights:
            raise ValueError("the model has no LoRA layers to record")
        self.folder = Path(output_dir) / TRAJECTORY_DIR
        self.every = every
        self.pending_steps: list[int] = []
        self.pending: dict[str, list[torch.Tensor]] = {key: [] for key in self.weights}
        self.last_step = -1

    def _record(self, step: int) -> None:
        if step <= self.last_step:
            return
        for key, weight in self.weights.items():
            self.pending[key].append(weight.detach().to("cpu", torch.float32, copy=True))
        self.pending_steps.append(step)
        self.last_step = step

    def _flush(self) -> None:
        if not self.pending_steps:
            return
        first, last = self.pending_steps[0], self.pending_steps[-1]
        tensors = {key: torch.stack(values) for key, values in self.pending.items()}
        tensors["steps"] = torch.tensor(self.pending_steps, dtype=torch.int64)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(tensors, self.folder / f"part-{first:06d}-{last:06d}.safetensors")
        self.pending_steps = []
        self.pending = {key: [] for key in self.weights}

    def _write(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        """Write a whole file or none: a crash mid-write leaves only a .tmp behind."""
        temporary = path.with_suffix(".tmp")
        save_file(tensors, temporary, metadata={"format": FORMAT, "every": str(self.every)})
        temporary.replace(path)

    def _drop_after(self, step: int) -> None:
        """Forget records past STEP (a resume from an earlier checkpoint)."""
        for part in sorted(self.folder.glob("part-*.safetensors")):
            match = PART.match(part.name)
            if not match or int(match.group(2)) <= step:
                continue
            if int(match.group(1)) > step:
                part.unlink()
                continue
            tensors = load_file(part)
            keep = tensors["steps"] <= step
            kept = {key: value[keep] for key, value in tensors.items()}
            last = int(kept["steps"][-1])
            self._write(kept, self.folder / f"part-{match.group(1)}-{last:06d}.safetensors")
            part.unlink()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.folder.is_dir():
            self._drop_after(state.global_step)
            steps, _ = read_parts(self.folder)
            self.last_step = steps[-1] if steps else -1
        self._record(state.global_step)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step % self.every == 0:
            self._record(state.global_step)
        if control.should_save:
            # on disk before the checkpoint is: a kill right after the checkpoint lands must not
            # lose the steps since the last part (a resume starts after them)
            self._flush()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._flush()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._record(state.global_step)  # the final adapter, whatever `every` is
        self._flush()
        self._merge(state.log_history)

    def _merge(self, history: list[dict[str, Any]]) -> None:
        """The parts as one file, with the loss and gradient norm of each recorded step."""
        steps, tensors = read_parts(self.folder)
        logged = {row["step"]: row for row in history if "step" in row and "loss" in row}
        for name in ("loss", "grad_norm"):
            values = [float(logged.get(s, {}).get(name, float("nan"))) for s in steps]
            tensors[name] = torch.tensor(values, dtype=torch.float32)
        tensors["steps"] = torch.tensor(steps, dtype=torch.int64)
        self._write(tensors, self.folder.parent / TRAJECTORY_FILE)
        for part in self.folder.glob("part-*.safetensors"):
            part.unlink()
        # A run killed mid-write leaves a part's .tmp behind (see _write): ours, so it goes too.
        for leftover in self.folder.glob("part-*.tmp"):
            if PART.match(leftover.with_suffix(".safetensors").name):
                leftover.unlink()
        if any(self.folder.iterdir()):  # files that are not ours: left where they are
            logger.warning("%s holds files the recorder did not write; left in place", self.folder)
        else:
            self.folder.rmdir()


def read_trajectory(run_dir: Path) -> tuple[list[int], dict[str, torch.Tensor]]:
    """A run's recording: the merged file of a finished run, else the parts so far."""
    merged = Path(run_dir) / TRAJECTORY_FILE
    if merged.is_file():
        tensors = load_file(merged)
        return tensors.pop("steps").tolist(), tensors
    return read_parts(Path(run_dir) / TRAJECTORY_DIR)
