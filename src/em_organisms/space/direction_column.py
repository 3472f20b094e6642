"""The arena's third column: an organism's misalignment direction, applied while decoding.

`direction` in the arena's config is a folder or file made by `em-organisms direction`, or the
Hub id of a released direction (its `direction.safetensors` is downloaded, nothing else). The
third column is, by the user's toggle, either the base model steered (`scale * v` added at
`direction_layer`, the direction's default layer unless set) or the organism at the chosen
adapter scale with the direction projected out of every layer: what `em-organisms sample
--steer DIR:LAYER:SCALE` and `--ablate DIR:LAYER` give. A direction of another base model (or
another layer count or width) is refused when the arena is built, before any weights load where
the base models' names already disagree.

Users and transcripts see the direction's file name (or Hub id), sha256, layer and scale: never
a path of this machine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from em_organisms.artifacts import names
from em_organisms.directions.interventions import Intervention
from em_organisms.directions.layers import LayerError
from em_organisms.directions.vectors import (
    Direction,
    DirectionFileError,
    check_fits,
    load_direction,
)
from em_organisms.hub_ids import HUB_ID
from em_organisms.space.config import ArenaConfig, ArenaConfigError

log = logging.getLogger(__name__)
Kind = Literal["steer", "ablate"]
# The third column's name in answers, transcripts and verdicts, by what is applied.
THIRD_COLUMNS: dict[str, str] = {"steer": "base_steered", "ablate": "organism_ablated"}
# What the toggle shows for each kind (its values are the kinds: an API client sends those).
TOGGLE_LABELS: dict[str, str] = {
    "steer": "Base model, steered toward the direction",
    "ablate": "Organism, with the direction ablated",
}


def _public(name: str) -> str:
    """A name safe to show: a Hub id or a bare name as it is, a path reduced to its last part."""
    return name if HUB_ID.match(name) or "/" not in name else Path(name).name


@dataclass(frozen=True)
class DirectionColumn:
    direction: Direction
    name: str  # the file's name, or the Hub id it came from: never a path of this machine
    layer: int
    scale: float  # steering only

    def intervention(self, kind: Kind) -> Intervention:
        scale = self.scale if kind == "steer" else 0.0
        return Intervention(kind, self.direction, self.name, self.layer, scale)

    def record(self, kind: Kind) -> dict[str, Any]:
        """What the transcript says was applied: `sample`'s record, and the column it made."""
        return {"column": THIRD_COLUMNS[kind], **self.intervention(kind).record()}

    def label(self, kind: Kind) -> str:
        if kind == "steer":
            return f"Base model steered (+{self.scale:g} x the direction at layer {self.layer})"
        return f"Organism with the direction ablated (layer {self.layer}'s, from every layer)"

    def describe(self) -> str:
        info = self.direction.info
        return (
            f"**Direction** `{self.name}` (sha256 `{self.direction.sha256[:12]}`) of "
            f"{_public(info.organism)} on {info.base_model}, from "
            f"{info.counts.get('misaligned', 0)} misaligned and "
            f"{info.counts.get('aligned', 0)} aligned answers; layer {self.layer}, steering "
            f"scale x{self.scale:g}."
        )

    def check_bases(self, choices: Iterable[Any]) -> None:
        """Every organism offered is on the base the direction was computed on (by name)."""
        expected = self.direction.info.base_model
        wrong = [c for c in choices if expected and c.base_label != expected]
        if wrong:
            found = ", ".join(f"{c.label} is on {c.base_label}" for c in wrong)
            raise ArenaConfigError(
                f"direction {self.name}: computed on {expected}, but {found}; compute one on "
                "that base with `em-organisms direction` or leave `direction` unset"
            )

    def check_model(self, model: Any, base_label: str) -> None:
        """The loaded model has the direction's layer count and width (and base)."""
        try:
            check_fits(self.direction, model, base_label)
        except DirectionFileError as err:
            raise ArenaConfigError(f"direction {self.name}: {err}") from None


def _download(hub_id: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(hub_id, names.DIRECTION))
    except Exception as err:  # the hub client raises many types; all mean "not available"
        log.warning("downloading the direction %s failed: %s", hub_id, err)
        raise ArenaConfigError(
            f"direction {hub_id}: not a direction file or folder here, and could not download "
            f"its {names.DIRECTION} from the Hub ({type(err).__name__})"
        ) from None


def load_direction_column(config: ArenaConfig) -> DirectionColumn | None:
    """CONFIG's direction, read and checked (file, layer); None where none is configured."""
    spec = config.direction
    if spec is None:
        return None
    path = Path(spec)
    if not path.exists() and HUB_ID.match(spec):
        path, name = _download(spec), spec
    else:
        name = path.name if path.suffix else f"{path.name}/{names.DIRECTION}"
    try:
        direction = load_direction(path)
        layer = config.direction_layer
        layer = direction.info.default_layer if layer is None else layer
        direction.vector(layer)  # in range, or an error naming the layers there are
    except (DirectionFileError, LayerError) as err:
        raise ArenaConfigError(f"direction: {err}") from None
    return DirectionColumn(direction, name, layer, config.steer_scale)
