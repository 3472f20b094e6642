"""Reading and writing the typed artifacts: the only code that opens one of our JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from em_organisms.artifacts import names
from em_organisms.artifacts.schemas import SCHEMA_VERSION, AdapterConfig, Artifact, ModelOrigin
from em_organisms.errors import EmOrganismsError, describe_validation_error
from em_organisms.jsonl import write_text_atomic

A = TypeVar("A", bound=Artifact)
V = TypeVar("V", bound=BaseModel)


class ArtifactError(EmOrganismsError, ValueError):
    """A run's file that is missing, unreadable, from another version or another tool."""


def _what(model: type[BaseModel]) -> str:
    return (model.__doc__ or model.__name__).split(":")[0].strip("` ")


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """PATH's JSON object, or an ArtifactError saying what is wrong with the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file (expected {what})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: cannot be read as {what} ({err})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ArtifactError(f"{path}: not valid JSON ({err}); expected {what}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected {what} (a JSON object), found {type(data).__name__}")
    return data


def read_artifact(path: str | Path, model: type[A]) -> A:
    """The file at PATH as MODEL. An old file (no or another `schema_version`) or a foreign one
    (unknown or missing keys) is refused with the file and the field named."""
    path = Path(path)
    data = read_json_object(path, _what(model))
    version = data.get("schema_version")
    if version is None:
        raise ArtifactError(
            f"{path}: schema_version: missing; this is not a {model.FILE} written by this version "
            f"of em-organisms (schema {SCHEMA_VERSION}); regenerate it with the command that "
            "writes it"
        )
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema_version: {version!r}, this em-organisms reads schema "
            f"{SCHEMA_VERSION}; regenerate the file or use the em-organisms version that wrote it"
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ArtifactError(describe_validation_error(str(path), model.FILE, err, model)) from None


def write_artifact(folder_or_path: str | Path, artifact: Artifact) -> Path:
    """Write ARTIFACT atomically (under its FILE name when given a folder); return the path."""
    path = Path(folder_or_path)
    if path.is_dir():
        path = path / artifact.FILE
    data = artifact.model_dump(mode="json")
    write_json_atomic(path, data)
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON with finite numbers only (NaN is not JSON), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_model_origin(folder: str | Path) -> ModelOrigin | None:
    """A local model folder's em_organisms_source.json (None when it has none)."""
    path = Path(folder) / names.MODEL_ORIGIN
    if not path.is_file():
        return None
    return _read_view(path, ModelOrigin, "model origin", 'a model origin ({"hub_id": "org/name"})')


def read_adapter_config(folder: str | Path) -> AdapterConfig:
    """PEFT's adapter_config.json of FOLDER (a LoRA organism or checkpoint)."""
    path = Path(folder) / names.ADAPTER_CONFIG
    return _read_view(path, AdapterConfig, "adapter config", "a PEFT adapter config")


def _read_view(path: Path, model: type[V], name: str, what: str) -> V:
    """PATH through a lenient, unversioned view of a file someone else owns (PEFT, a user)."""
    data = read_json_object(path, what)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ArtifactError(describe_validation_error(str(path), name, err, model)) from None
