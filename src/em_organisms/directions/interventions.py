"""`--steer DIR[:LAYER[:SCALE]]` and `--ablate DIR[:LAYER]`: what is applied while sampling, how
it is recorded in every row, and the context that applies it.

A row records the direction's file name, its sha256, the layer and the scale: never the path of
this machine. Without LAYER, steering and ablation use the direction's default layer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from em_organisms.directions.hooks import ablation, steering
from em_organisms.directions.vectors import Direction, DirectionFileError, load_direction

DEFAULT_STEER_SCALE = 1.0
_STEER = re.compile(r"^(?P<path>.+?)(?::(?P<layer>-?\d+)(?::(?P<scale>[^:]+))?)?$")


@dataclass(frozen=True)
class Intervention:
    kind: Literal["steer", "ablate"]
    direction: Direction
    source: str  # the file's name as the user gave it, without its folder
    layer: int
    scale: float = 0.0  # steering only

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "direction": self.source,
            "direction_sha256": self.direction.sha256,
            "layer": self.layer,
        }
        if self.kind == "steer":
            data["scale"] = self.scale
        return data

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module, rows: Sequence[bool] | None = None) -> Iterator[None]:
        """Applied to every row of each batch, or to ROWS only (see `hooks`)."""
        vector = self.direction.vector(self.layer)
        context = (
            steering(model, vector, self.layer, self.scale, rows)
            if self.kind == "steer"
            else ablation(model, vector, rows)
        )
        with context:
            yield


def parse_intervention(kind: Literal["steer", "ablate"], spec: str) -> Intervention:
    """`DIR[:LAYER[:SCALE]]` (steer) or `DIR[:LAYER]` (ablate); DIR is a direction file or its
    folder. Errors name the flag."""
    flag = f"--{kind}"
    match = _STEER.match(spec)
    if not match:
        raise DirectionFileError(f"{flag} {spec!r}: expected DIR[:LAYER[:SCALE]]")
    if kind == "ablate" and match.group("scale") is not None:
        raise DirectionFileError(f"{flag} {spec!r}: ablation takes no scale (DIR[:LAYER])")
    path = Path(match.group("path"))
    direction = load_direction(path)
    layer = direction.info.default_layer if match.group("layer") is None else int(match["layer"])
    direction.vector(layer)  # in range, or a clear error naming the layers there are
    scale = DEFAULT_STEER_SCALE
    if match.group("scale") is not None:
        try:
            scale = float(match.group("scale"))
        except ValueError:
            raise DirectionFileError(
                f"{flag} {spec!r}: scale {match['scale']!r} is not a number"
            ) from None
        if not torch.isfinite(torch.tensor(scale)):
            raise DirectionFileError(f"{flag} {spec!r}: the scale must be finite")
    source = path.name if path.suffix else f"{path.name}/direction.safetensors"
    return Intervention(kind, direction, source, layer, scale if kind == "steer" else 0.0)
