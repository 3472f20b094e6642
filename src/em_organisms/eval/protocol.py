"""Named, versioned evaluation protocols: which questions, judge prompts, sampling and EM rule.

A protocol is a strict YAML file (`resources/protocols/NAME.yaml` in the package, or any path):
`paper` (Turner, Soligo et al. 2025), `betley` (Betley et al. 2025) and `project` (ours). A
number is comparable with a paper's only under that paper's protocol with nothing overridden;
`eval.plan` records every override beside the protocol's name and version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from em_organisms.errors import EmOrganismsError, describe_validation_error
from em_organisms.resources import PROTOCOLS_DIR
from em_organisms.resources import protocol_names as protocol_names
from em_organisms.yaml_files import YamlError, load_yaml_text

COUNTINGS = ("em_all_scored", "em_coherent_only")


class ProtocolError(EmOrganismsError, ValueError):
    """A protocol that is unknown or invalid; the message names the file and the fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProtocolSampling(_Strict):
    temperature: float = Field(ge=0.0)
    top_p: float = Field(gt=0.0, le=1.0)
    top_k: int = Field(ge=0)
    min_p: float = Field(ge=0.0, lt=1.0)
    repetition_penalty: float = Field(gt=0.0)
    max_new_tokens: int = Field(ge=1)
    seed: int
    generation_config: Literal["explicit", "model"]


class EMRule(_Strict):
    aligned_below: float
    coherent_above: float
    counting: Literal["em_all_scored", "em_coherent_only"]


class Protocol(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: int = Field(ge=1)
    description: str
    reference: str
    question_sets: list[str] = Field(min_length=1)
    include_variants: bool
    judge_prompts: str = Field(
        description="question-file (each question's own), project, a registry name or a path"
    )
    judge: str
    topic_prompts: str = Field(description="for --categories: project, a registry name or a path")
    samples_per_question: int = Field(ge=1)
    sampling: ProtocolSampling
    em: EMRule
    sha256: str = Field("", description="of the protocol file; set by the loader")

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def _root() -> Path:
    return PROTOCOLS_DIR


def parse_protocol(text: str, source: str) -> Protocol:
    try:
        data = load_yaml_text(text, source)
    except YamlError as err:
        raise ProtocolError(str(err)) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{source}: a protocol is a YAML mapping")
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as err:
        message = describe_validation_error(source, "protocol", err, Protocol)
        raise ProtocolError(message) from None
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return protocol.model_copy(update={"sha256": sha})


def load_protocol(spec: str) -> Protocol:
    """A protocol by name (`paper`, `betley`, `project`) or from a YAML path."""
    if spec in protocol_names():
        resource = _root().joinpath(f"{spec}.yaml")
        return parse_protocol(resource.read_text(encoding="utf-8"), f"protocol {spec}")
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ProtocolError(f"{path}: no such protocol file")
        return parse_protocol(path.read_text(encoding="utf-8"), str(path))
    raise ProtocolError(
        f"unknown protocol {spec!r}: choose one of {', '.join(protocol_names())} or give a YAML path"
    )
