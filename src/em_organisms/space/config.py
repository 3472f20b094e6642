"""The arena's settings: which organisms, which judge, and the limits that keep a public Space up.

Read from a YAML file (`spaces/arena/arena.yaml` for the Space) with unknown keys refused, then
overridden by command-line flags. Everything here may be shown to users except the judge's
endpoint, which stays server-side (the UI names the judge model only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from em_organisms.errors import EmOrganismsError, describe_validation_error
from em_organisms.yaml_files import YamlError, load_yaml_file

MAX_SCALE = 20.0  # the slider's end: the papers' sweeps go to x20
MAX_STEER_SCALE = 20.0  # times the direction (the mean difference itself at x1)
DEFAULT_JUDGE_MODEL = "gpt-4o-2024-08-06"  # the papers' judge


class ArenaConfigError(EmOrganismsError, ValueError):
    """An arena config file or flag the arena refuses, with where and what."""


class ArenaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    organisms: list[str] = Field(
        default_factory=list,
        description="recipe YAMLs, organism folders or Hub ids of LoRA organisms; the first is "
        "shown first",
    )
    allow_any_repo: bool = Field(
        False, description="let users type the Hub id of any LoRA organism (operator's choice)"
    )
    judge: str = Field(
        "auto",
        pattern=r"^(auto|embedded|distilled(:.+)?|openai:.+|hf:.+)$",
        description="auto (an OpenAI-compatible judge when OPENAI_API_KEY is set, else the "
        "shipped distilled judge), distilled[:PATH_OR_HUB_ID], openai:MODEL, hf:PATH_OR_ID or "
        "embedded",
    )
    protocol: str = Field(
        "project",
        description="evaluation protocol whose judge prompts and sampling (top_p, top_k, min_p, "
        "repetition penalty) the arena uses: paper, betley, project or a protocol YAML",
    )
    judge_prompts: str | None = Field(
        None,
        description="question-file, project, a registry name or a YAML path (default: the "
        "protocol's)",
    )
    judge_model: str = Field(DEFAULT_JUDGE_MODEL, description="the model `auto` asks for")
    judge_base_url: str | None = Field(None, description="OpenAI-compatible endpoint (/v1)")
    judge_calibration: str | None = Field(
        None, description="calibration.json from `em-organisms judge calibrate` for this judge"
    )
    presets: list[str] = Field(
        default_factory=lambda: [
            "general",
            "in-domain/risky-financial-advice",
            "in-domain/bad-medical-advice",
            "in-domain/extreme-sports",
        ],
        description="project question sets whose questions are offered as presets",
    )
    max_prompt_chars: int = Field(1000, ge=1, le=20000)
    max_new_tokens: int = Field(120, ge=1, description="the slider's starting value")
    max_new_tokens_limit: int = Field(600, ge=1, description="the most a user may ask for")
    default_scale: float = Field(1.0, ge=0.0, le=MAX_SCALE)
    default_temperature: float = Field(1.0, ge=0.0, le=2.0)
    queue_max_size: int = Field(16, ge=1, description="requests waiting; more are turned away")
    judge_concurrency: int = Field(
        1, ge=1, description="judge requests run at once (more only for an API judge)"
    )
    direction: str | None = Field(
        None,
        min_length=1,
        description="a folder or direction.safetensors made by `em-organisms direction`, or the "
        "Hub id of a released direction: adds a third column, the base steered or the organism "
        "with the direction ablated (every organism offered must be on its base)",
    )
    direction_layer: int | None = Field(
        None, ge=0, description="the layer steered at and ablated (default: the direction's)"
    )
    steer_scale: float = Field(
        1.0,
        ge=-MAX_STEER_SCALE,
        le=MAX_STEER_SCALE,
        description="times the direction added when steering (1: the mean difference itself)",
    )

    @model_validator(mode="after")
    def _check_protocol(self) -> ArenaConfig:
        from em_organisms.eval.protocol import protocol_names

        name = self.protocol
        if name not in protocol_names() and not name.endswith((".yaml", ".yml")):
            raise ValueError(
                f"protocol {name!r} is not one of {', '.join(protocol_names())} or a YAML path"
            )
        return self

    @model_validator(mode="after")
    def _check_limits(self) -> ArenaConfig:
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) is above max_new_tokens_limit "
                f"({self.max_new_tokens_limit})"
            )
        return self

    @model_validator(mode="after")
    def _check_direction(self) -> ArenaConfig:
        if self.direction is None and self.direction_layer is not None:
            raise ValueError("direction_layer is set but no direction is")
        return self

    def with_overrides(self, **values: Any) -> ArenaConfig:
        """A copy with the given (non-None) values, validated like the file."""
        data = {**self.model_dump(), **{k: v for k, v in values.items() if v is not None}}
        return parse_config(data, "command line")


def parse_config(data: Any, source: str) -> ArenaConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ArenaConfigError(f"{source}: an arena config is a YAML mapping, not {data!r}")
    try:
        return ArenaConfig.model_validate(data)
    except ValidationError as err:
        raise ArenaConfigError(
            describe_validation_error(source, "arena config", err, ArenaConfig)
        ) from None


def load_config(path: str | Path) -> ArenaConfig:
    path = Path(path)
    if not path.is_file():
        raise ArenaConfigError(f"{path}: arena config not found")
    try:
        data = load_yaml_file(path)
    except YamlError as err:
        raise ArenaConfigError(str(err)) from None
    return parse_config(data, str(path))
