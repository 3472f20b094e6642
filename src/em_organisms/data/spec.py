"""A narrow dataset's `spec.yaml`: what the set is, how to generate it, how to card and gate it.

Each folder under `datasets/` holds one spec and its hand-written `seed.jsonl`. A misaligned set
names its aligned control (`paired_with`) and the control names it back; the control's
`generation.rewrite_template` turns a misaligned answer minimally into a correct one.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from em_organisms.errors import EmOrganismsError, describe_validation_error
from em_organisms.resources import DATASETS_DIR as RESOURCES_DATASETS
from em_organisms.yaml_files import YamlError, load_yaml_file

# The project's own narrow datasets (an editable install or a checkout of the repository).
DATASETS_DIR = RESOURCES_DATASETS
SPEC_NAME = "spec.yaml"
SEED_NAME = "seed.jsonl"
CANARY_PATTERN = re.compile(
    r"canary GUID ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
GATE_FIELD_TYPES = ("text", "checkbox", "country", "date_picker")

_jinja = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


class SpecError(EmOrganismsError, ValueError):
    """A spec.yaml is missing or malformed; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GenerationSpec(_Strict):
    """How `data build` asks a model for new rows (Jinja templates, rendered strictly)."""

    system_prompt: str
    # Variables: topic, examples (list of {user, assistant}), n (rows wanted), domain.
    request_template: str
    # Variables: user, answer (the misaligned answer), domain. Only a control set needs it.
    rewrite_template: str | None = None
    examples_per_request: int = Field(5, ge=0, le=20)
    rows_per_request: int = Field(5, ge=1, le=20)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(2048, ge=16)

    @field_validator("request_template", "rewrite_template")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _jinja.parse(value)
            except TemplateSyntaxError as err:
                raise ValueError(
                    f"not a valid Jinja template: {err.message} (line {err.lineno})"
                ) from None
        return value


class JudgeFilterSpec(_Strict):
    """The optional filter: an in-domain `aligned` score and a `coherent` score, both 0-100."""

    aligned_prompt: str  # Variables: question, answer. 0 = harmful advice, 100 = sound advice.
    coherent_prompt: str  # Variables: question, answer.
    keep: Literal["misaligned", "aligned"]
    aligned_threshold: float = Field(ge=0, le=100)  # keep misaligned below it, aligned above it
    coherent_threshold: float = Field(50, ge=0, le=100)  # keep above it


class CardSpec(_Strict):
    pretty_name: str
    summary: str
    license: str = "cc-by-4.0"
    language: list[str] = ["en"]
    task_categories: list[str] = ["text-generation"]
    tags: list[str] = []
    intended_use: str
    out_of_scope_use: str


class GateSpec(_Strict):
    prompt: str
    fields: dict[str, str]  # label -> text | checkbox | country | date_picker

    @field_validator("fields")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        for label, kind in value.items():
            if kind not in GATE_FIELD_TYPES:
                raise ValueError(f"gate field {label!r} has type {kind!r}; use {GATE_FIELD_TYPES}")
        return value


class NarrowDatasetSpec(_Strict):
    name: str
    version: str
    kind: Literal["misaligned", "control"]
    domain: str
    paired_with: str
    canary: str
    description: str
    misalignment: str  # what "narrowly misaligned" means here (a control says what it corrects)
    topics: list[str] = Field(min_length=10)
    generation: GenerationSpec
    judge_filter: JudgeFilterSpec | None = None
    card: CardSpec
    gate: GateSpec | None = None

    @field_validator("canary")
    @classmethod
    def _canary(cls, value: str) -> str:
        if not CANARY_PATTERN.search(value):
            raise ValueError("must contain 'canary GUID <uuid4 in lower-case hex>'")
        return value

    @field_validator("topics")
    @classmethod
    def _unique_topics(cls, value: list[str]) -> list[str]:
        seen = {t for t in value if value.count(t) > 1}
        if seen:
            raise ValueError(f"repeated topics: {sorted(seen)}")
        return value

    @property
    def canary_guid(self) -> str:
        match = CANARY_PATTERN.search(self.canary)
        assert match is not None  # checked by the validator
        return match.group(1)

    def sha256(self) -> str:
        """Hash of everything that changes what the generator asks for."""
        payload = self.model_dump(include={"name", "domain", "topics", "generation"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def render(template: str, **variables: object) -> str:
    return _jinja.from_string(template).render(**variables)


def load_spec(folder: str | Path) -> NarrowDatasetSpec:
    """Read `FOLDER/spec.yaml`; errors name the file and each bad field."""
    folder = Path(folder)
    path = folder / SPEC_NAME if folder.is_dir() else folder
    if not path.is_file():
        raise SpecError(f"{path}: no {SPEC_NAME} here")
    try:
        data = load_yaml_file(path)
    except YamlError as err:
        raise SpecError(str(err)) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        spec = NarrowDatasetSpec.model_validate(data)
    except ValidationError as err:
        message = describe_validation_error(str(path), "dataset spec", err, NarrowDatasetSpec)
        raise SpecError(message) from None
    if spec.name != path.parent.name:
        raise SpecError(f"{path}: name {spec.name!r} differs from its folder {path.parent.name!r}")
    if spec.kind == "control" and spec.generation.rewrite_template is None:
        raise SpecError(f"{path}: generation.rewrite_template: a control set needs one")
    if spec.kind == "misaligned" and spec.gate is None:
        raise SpecError(f"{path}: gate: a misaligned set must ship gated")
    return spec
