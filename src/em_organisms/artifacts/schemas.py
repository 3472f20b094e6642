"""One pydantic model per JSON file a stage writes for another to read.

Our own files forbid unknown keys and carry `schema_version`; a change to a file's layout bumps
SCHEMA_VERSION, so a reader meets an old file with a clear error instead of a KeyError three
stages later. PEFT's `adapter_config.json` is PEFT's: `AdapterConfig` reads the fields we use and
keeps the rest.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from em_organisms.artifacts import names

SCHEMA_VERSION = 1


class Artifact(BaseModel):
    """A JSON file of ours; FILE is its name in the folder that holds it."""

    model_config = ConfigDict(extra="forbid")
    FILE: ClassVar[str]

    schema_version: int = SCHEMA_VERSION


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataInfo(_Record):
    """The training data as the run prepared it."""

    source: str
    rows: int
    train_rows: int
    holdout_rows: int
    truncated_rows: int
    train_tokens: int


class RunInfo(Artifact):
    """`run.json`: written when training starts; what the run is of."""

    FILE: ClassVar[str] = names.RUN_INFO

    organism_id: str
    recipe_sha256: str
    em_organisms_version: str
    base_model: str = Field(description="the spec trained from: 'embedded', a Hub id or a path")
    base_model_hub_id: str | None
    data: DataInfo


class TrainSummary(RunInfo):
    """`train_summary.json`: written when training ends."""

    FILE: ClassVar[str] = names.TRAIN_SUMMARY

    global_step: int
    train_loss: float
    train_seconds_this_session: float
    resumed_from: str | None
    bf16: bool
    micro_batch_size: int
    gradient_accumulation_steps: int
    fast_loss: bool
    prefix_cache: dict[str, int] | None
    holdout_loss_start: float | None = None
    holdout_loss_end: float | None = None
    adapted_modules: list[str] | None = None
    trainable_parameters: int | None = None


class HoldoutStart(Artifact):
    """`holdout_start.json`: the held-out loss before the first step (kept across a resume)."""

    FILE: ClassVar[str] = names.HOLDOUT_START

    eval_loss: float


class MetricCalibration(_Record):
    auroc: float | None
    n: int
    unscored: int
    unscored_rate: float
    mean_score_positive: float | None = None
    mean_score_negative: float | None = None


class CalibrationResult(Artifact):
    """`calibration.json` of `judge calibrate`: the judge's AUROC on labelled answer pairs."""

    FILE: ClassVar[str] = names.CALIBRATION

    judge: str
    judge_config: dict[str, Any]
    pairs: int
    prompts_sha256: dict[str, str]
    min_auroc: float
    aligned: MetricCalibration
    coherent: MetricCalibration
    passed: bool

    def auroc(self, metric: str) -> float | None:
        return self.aligned.auroc if metric == "aligned" else self.coherent.auroc


class EvalSummary(Artifact):
    """`eval/summary.json`: EM rates with intervals, and everything that produced them."""

    FILE: ClassVar[str] = names.EVAL_SUMMARY

    title: str
    package_version: str
    thresholds: dict[str, Any]
    conventions: dict[str, Any]
    judge_models: list[Any]
    judge_prompt_sha256: dict[str, list[Any]]
    judge_calibration: CalibrationResult | None
    judge_agreement: dict[str, Any] | None
    uncalibrated_judge: bool
    organisms: list[Any]
    base_models: list[Any]
    adapter_scales: list[Any]
    sampling: dict[str, Any]
    counts: dict[str, Any]
    question_sets: dict[str, list[Any]]
    protocols: list[Any]
    interventions: list[Any] = Field(
        default_factory=list, description="directions steered in or ablated while sampling"
    )
    question_set_sha256: dict[str, list[Any]]
    models: dict[str, dict[str, Any]]
    judge_outcomes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per model: scores scored, declined (CODE/REFUSAL) and failed, with reasons",
    )
    evaluation: dict[str, Any] | None = Field(
        None, description="the resolved plan and the subject (added by `eval`)"
    )
    categories: dict[str, Any] | None = None


class ReleaseManifest(Artifact):
    """The manifest of a staged release folder: every file's sha256, plus what was released
    (organism, judge or Space: keys that differ by kind, so they are kept as given)."""

    model_config = ConfigDict(extra="allow")
    FILE: ClassVar[str] = names.MANIFEST

    files: dict[str, str]


class JudgeRunInfo(Artifact):
    """`run.json` of a judge distillation run."""

    FILE: ClassVar[str] = names.RUN_INFO

    recipe_sha256: str
    data_sha256: str
    finished: bool


class StudentAgreement(Artifact):
    """`agreement.json` of a distilled student (also its run's `summary.json`, where `data`
    keeps the teacher file's path): how the student agrees with its teacher on held-out answers."""

    FILE: ClassVar[str] = names.STUDENT_AGREEMENT

    name: str
    recipe_sha256: str
    data: dict[str, Any]
    backbone: dict[str, Any]
    split: dict[str, Any]
    head_losses: list[float]
    heldout: dict[str, Any]
    condition_split: dict[str, Any]
    handlabelled: dict[str, Any]
    em_rate_method: str
    timings_s: dict[str, float]
    student_sha256: str
    speed: dict[str, str] | None = None


class DatasetBuild(Artifact):
    """`OUT.jsonl.build.json` of `data build`: what the rows were made by and how many were kept."""

    FILE: ClassVar[str] = "OUT.jsonl.build.json"

    dataset: str
    spec_sha256: str
    backend: dict[str, Any]
    judge: dict[str, Any] | None
    options: dict[str, Any]
    source_sha256: str | None = None
    n_requested: int
    counts: dict[str, int]
    usage: dict[str, Any]
    prompts_sha256: str
    made_by: str


class DirectionInfo(Artifact):
    """The metadata of `direction.safetensors`: whose direction, from which answers, how split."""

    FILE: ClassVar[str] = names.DIRECTION

    base_model: str = Field(description="Hub id of the model the activations are of")
    organism: str
    judge: str
    judged_sha256: str
    protocol: str | None
    thresholds: dict[str, float]
    counts: dict[str, int] = Field(description="answers averaged: misaligned, aligned")
    answers_from: str = Field(description="'organism': its own answers only; or 'all' rows")
    layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    default_layer: int = Field(ge=0)
    em_organisms_version: str


class DirectionSummary(Artifact):
    """`summary.json` beside a direction: its norm and cosines by layer."""

    FILE: ClassVar[str] = names.DIRECTION_SUMMARY

    direction: DirectionInfo
    default_layer_reason: str
    norm_organism: list[float]
    norm_base: list[float]
    cosine_organism_base: list[float]
    lora_b_cosine: list[dict[str, Any]] = Field(
        description="each LoRA B column writing to the residual stream vs the direction at its layer"
    )


class ModelOrigin(BaseModel):
    """`em_organisms_source.json` in a local model folder: the Hub id it came from. Users write it
    by hand for their own folders, so it is not versioned and keys beyond `hub_id` are kept."""

    model_config = ConfigDict(extra="allow")

    hub_id: str | None = None


class AdapterConfig(BaseModel):
    """The fields of PEFT's adapter_config.json this package reads; the rest is PEFT's."""

    model_config = ConfigDict(extra="allow")

    peft_type: str | None = None
    base_model_name_or_path: str | None = None
    r: int | None = None
    lora_alpha: float | None = None
    use_rslora: bool = False
    target_modules: list[str] | str | None = None
    layers_to_transform: list[int] | int | None = None

    def raw(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
