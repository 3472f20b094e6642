"""The files the stages hand each other, typed: one pydantic model per JSON file, written and read
only here.

- `names`: the file and folder names of a run (`run.json`, `checkpoint-N/`, PEFT's files).
- `schemas`: the models (`RunInfo`, `TrainSummary`, `EvalSummary`, `CalibrationResult`,
  `ReleaseManifest`, `JudgeRunInfo`, `StudentAgreement`, `DatasetBuild`, `DirectionInfo`,
  `DirectionSummary`, and a read-only view of PEFT's `AdapterConfig`), each with a
  `schema_version`.
- `store`: `read_artifact` / `write_artifact` (atomic); an old or foreign file is refused with an
  error naming the file and the field.
- `run`: `OrganismRun`, a training run folder with everything in it, and `JudgeRun`.
"""

from em_organisms.artifacts.names import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CALIBRATION,
    EVAL_SUMMARY,
    GENERATION_CONFIG,
    RECIPE,
    RUN_INFO,
    TRAIN_SUMMARY,
    checkpoint_step,
)
from em_organisms.artifacts.run import (
    Checkpoint,
    JudgeRun,
    OrganismRun,
    read_calibration,
    read_eval_summary,
)
from em_organisms.artifacts.schemas import (
    SCHEMA_VERSION,
    AdapterConfig,
    CalibrationResult,
    DatasetBuild,
    DirectionInfo,
    DirectionSummary,
    EvalSummary,
    JudgeRunInfo,
    ReleaseManifest,
    RunInfo,
    StudentAgreement,
    TrainSummary,
)
from em_organisms.artifacts.store import (
    ArtifactError,
    read_adapter_config,
    read_artifact,
    write_artifact,
)

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "CALIBRATION",
    "EVAL_SUMMARY",
    "GENERATION_CONFIG",
    "RECIPE",
    "RUN_INFO",
    "SCHEMA_VERSION",
    "TRAIN_SUMMARY",
    "AdapterConfig",
    "ArtifactError",
    "CalibrationResult",
    "Checkpoint",
    "DatasetBuild",
    "DirectionInfo",
    "DirectionSummary",
    "EvalSummary",
    "JudgeRun",
    "JudgeRunInfo",
    "OrganismRun",
    "ReleaseManifest",
    "RunInfo",
    "StudentAgreement",
    "TrainSummary",
    "checkpoint_step",
    "read_adapter_config",
    "read_artifact",
    "read_calibration",
    "read_eval_summary",
    "write_artifact",
]
