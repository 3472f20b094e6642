"""A run folder and everything in it, read through the typed artifacts.

An organism's run folder holds the organism as trained at its top level (`adapter_config.json` and
`adapter_model.safetensors` for LoRA, `config.json` and `model*.safetensors` for full SFT), the
recipe it was trained from, `run.json` (written at the start), `train_summary.json` (at the end),
the `checkpoint-N/` folders, the adapter trajectory and, usually, `eval/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from em_organisms.artifacts import names
from em_organisms.artifacts.schemas import (
    AdapterConfig,
    CalibrationResult,
    EvalSummary,
    HoldoutStart,
    JudgeRunInfo,
    RunInfo,
    TrainSummary,
)
from em_organisms.artifacts.store import (
    ArtifactError,
    read_adapter_config,
    read_artifact,
    write_artifact,
)


@dataclass(frozen=True)
class Checkpoint:
    step: int
    folder: Path


@dataclass(frozen=True)
class OrganismRun:
    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    def path(self, name: str) -> Path:
        return self.folder / name

    # what the folder holds
    @property
    def recipe_path(self) -> Path:
        return self.folder / names.RECIPE

    @property
    def is_lora(self) -> bool:
        return (self.folder / names.ADAPTER_CONFIG).is_file()

    @property
    def has_adapter_weights(self) -> bool:
        return (self.folder / names.ADAPTER_WEIGHTS).is_file()

    @property
    def has_full_weights(self) -> bool:
        return any(self.folder.glob("model*.safetensors"))

    @property
    def is_finished(self) -> bool:
        """Training ended and saved the organism (a crash or a kill leaves no summary)."""
        return (self.folder / names.TRAIN_SUMMARY).is_file()

    @property
    def trajectory_path(self) -> Path:
        return self.folder / names.TRAJECTORY

    @property
    def training_log_path(self) -> Path:
        return self.folder / names.TRAINING_LOG

    def eval_dir(self) -> Path:
        return self.folder / names.EVAL_DIR

    # typed files
    def run_info(self) -> RunInfo:
        return read_artifact(self.folder / names.RUN_INFO, RunInfo)

    def run_info_or_none(self) -> RunInfo | None:
        return self.run_info() if (self.folder / names.RUN_INFO).is_file() else None

    def train_summary(self) -> TrainSummary:
        return read_artifact(self.folder / names.TRAIN_SUMMARY, TrainSummary)

    def train_summary_or_none(self) -> TrainSummary | None:
        return self.train_summary() if self.is_finished else None

    def holdout_start(self) -> HoldoutStart | None:
        path = self.folder / names.HOLDOUT_START
        return read_artifact(path, HoldoutStart) if path.is_file() else None

    def adapter_config(self) -> AdapterConfig:
        return read_adapter_config(self.folder)

    def eval_summary(self, eval_dir: Path | None = None) -> EvalSummary:
        return read_eval_summary(eval_dir or self.eval_dir())

    def write(self, artifact: RunInfo | TrainSummary | HoldoutStart) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return write_artifact(self.folder / artifact.FILE, artifact)

    # derived
    def base_spec(self) -> str:
        """The base model to load under this organism: the spec it was trained from when this
        package trained it (e.g. 'embedded'), else the Hub id in PEFT's adapter config."""
        info = self.run_info_or_none()
        if info is not None:
            return info.base_model
        base = self.adapter_config().base_model_name_or_path
        if not base:
            raise ArtifactError(
                f"{self.folder / names.ADAPTER_CONFIG}: base_model_name_or_path: missing; "
                "name the base model explicitly"
            )
        return base

    def checkpoints(self) -> list[Checkpoint]:
        """The `checkpoint-N` folders in step order (real folders only: a symlink is not ours)."""
        found = []
        if self.folder.is_dir():
            for child in self.folder.iterdir():
                step = names.checkpoint_step(child.name)
                if step is not None and child.is_dir() and not child.is_symlink():
                    found.append(Checkpoint(step, child))
        return sorted(found, key=lambda c: c.step)

    def adapter_checkpoints(self) -> list[Checkpoint]:
        """Checkpoints that hold a saved adapter."""
        return [c for c in self.checkpoints() if (c.folder / names.ADAPTER_WEIGHTS).is_file()]


def read_eval_summary(eval_dir: Path) -> EvalSummary:
    return read_artifact(Path(eval_dir) / names.EVAL_SUMMARY, EvalSummary)


def read_calibration(path: Path) -> CalibrationResult:
    """A `judge calibrate` result: its calibration.json, or the folder holding one."""
    path = Path(path)
    return read_artifact(path / names.CALIBRATION if path.is_dir() else path, CalibrationResult)


@dataclass(frozen=True)
class JudgeRun:
    """A judge distillation run folder (`judge distill`)."""

    folder: Path

    def info_or_none(self) -> JudgeRunInfo | None:
        path = Path(self.folder) / names.RUN_INFO
        return read_artifact(path, JudgeRunInfo) if path.is_file() else None

    def write_info(self, info: JudgeRunInfo) -> Path:
        return write_artifact(Path(self.folder) / info.FILE, info)
