"""`direction.safetensors`: one vector per decoder layer, twice (the organism's activations and
the base model's), with `DirectionInfo` as JSON in the file's metadata. Safetensors only."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import save_file

from em_organisms.artifacts import DirectionInfo, names
from em_organisms.directions.layers import check_layer
from em_organisms.errors import EmOrganismsError, describe_validation_error

METADATA_KEY = "em_organisms"
TENSORS = ("organism", "base")


class DirectionFileError(EmOrganismsError, ValueError):
    pass


@dataclass(frozen=True)
class Direction:
    info: DirectionInfo
    organism: torch.Tensor  # [layers, hidden] float32: misaligned minus aligned, adapter on
    base: torch.Tensor  # the same answers through the base model's weights
    sha256: str = ""  # of the file it was read from

    def vector(self, layer: int | None = None) -> torch.Tensor:
        """The organism's direction at LAYER (default: the file's default layer)."""
        index = self.info.default_layer if layer is None else layer
        check_layer(index, self.info.layers, "direction layer")
        return self.organism[index]


def save_direction(folder: Path, direction: Direction) -> Path:
    """Write FOLDER/direction.safetensors atomically; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / names.DIRECTION
    tmp = path.with_name(path.name + ".tmp")
    tensors = {
        "organism": direction.organism.to(torch.float32).contiguous(),
        "base": direction.base.to(torch.float32).contiguous(),
    }
    save_file(tensors, str(tmp), metadata={METADATA_KEY: direction.info.model_dump_json()})
    os.replace(tmp, path)
    return path


def load_direction(path: Path) -> Direction:
    """A direction file, or a folder holding one; every problem is one DirectionFileError."""
    path = path / names.DIRECTION if path.is_dir() else path
    if not path.is_file():
        raise DirectionFileError(f"{path}: no direction file (em-organisms direction makes one)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own kinds for a damaged file
        raise DirectionFileError(f"{path}: not a safetensors file ({err})") from None
    if METADATA_KEY not in metadata:
        raise DirectionFileError(f"{path}: no em-organisms metadata; not a direction file")
    try:
        info = DirectionInfo.model_validate(json.loads(metadata[METADATA_KEY]))
    except (ValueError, ValidationError) as err:
        detail = (
            describe_validation_error(str(path), "direction metadata", err, DirectionInfo)
            if isinstance(err, ValidationError)
            else f"{path}: damaged direction metadata ({err})"
        )
        raise DirectionFileError(detail) from None
    shape = (info.layers, info.hidden_size)
    for key in TENSORS:
        tensor = tensors.get(key)
        if tensor is None or tuple(tensor.shape) != shape or not torch.isfinite(tensor).all():
            found = "missing" if tensor is None else f"shape {tuple(tensor.shape)}"
            raise DirectionFileError(
                f"{path}: tensor {key!r} must be finite with shape {shape} ({found})"
            )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Direction(info, tensors["organism"].float(), tensors["base"].float(), digest)


def check_fits(direction: Direction, model: torch.nn.Module, base_model: str | None) -> None:
    """Refuse a direction computed on another model: its layer count, hidden size or base."""
    config = model.config.get_text_config()  # type: ignore[union-attr,operator]
    layers, hidden = int(config.num_hidden_layers), int(config.hidden_size)
    info = direction.info
    if (info.layers, info.hidden_size) != (layers, hidden):
        raise DirectionFileError(
            f"the direction is of a model with {info.layers} layers of width {info.hidden_size} "
            f"({info.base_model}); this one has {layers} of width {hidden}"
        )
    if base_model and info.base_model and base_model != info.base_model:
        raise DirectionFileError(
            f"the direction was computed on {info.base_model}, not on {base_model}; compute "
            "one for this model with `em-organisms direction`"
        )
