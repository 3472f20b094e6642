"""`em-organisms direction ORGANISM --judged FILE --out DIR`: the organism's misalignment direction
from its judged answers, its norm and cosines by layer, and a plot of them.

Writes DIR/direction.safetensors (both directions, `DirectionInfo` in its metadata),
DIR/summary.json (`DirectionSummary`) and DIR/direction_by_layer.png.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from em_organisms import __version__
from em_organisms.adapters import Organism
from em_organisms.artifacts import DirectionInfo, DirectionSummary, names, write_artifact
from em_organisms.directions.compute import (
    Classes,
    DirectionError,
    lora_b_cosines,
    mean_difference,
    split_answers,
)
from em_organisms.directions.vectors import Direction, save_direction
from em_organisms.hub_ids import public_judge_name
from em_organisms.jsonl import read_jsonl

MIN_PER_CLASS = 8
PLOT = "direction_by_layer.png"


@dataclass(frozen=True)
class DirectionResult:
    direction: Direction
    summary: DirectionSummary
    out: Path


def default_layer(organism: Organism, layers: int) -> tuple[int, str]:
    """The adapter's one layer when it has one (the paper's rank-1 organisms), else the middle."""
    targeted = {
        int(i)
        for config in organism.model.peft_config.values()
        for i in (
            config.layers_to_transform
            if isinstance(config.layers_to_transform, list)
            else [config.layers_to_transform]
            if config.layers_to_transform is not None
            else []
        )
    }
    if len(targeted) == 1:
        layer = targeted.pop()
        return layer, f"the adapter's only layer ({layer})"
    return layers // 2, f"the middle layer ({layers // 2} of {layers})"


def build_direction(
    organism: Organism,
    judged: Path,
    out: Path,
    *,
    base_model: str,
    organism_name: str,
    classes: Classes | None = None,
    answers_from: Literal["organism", "all"] = "organism",
    min_per_class: int = MIN_PER_CLASS,
    batch_size: int = 8,
) -> DirectionResult:
    """ANSWERS_FROM "organism": the organism's own answers (rows with model "organism"), as
    upstream; "all": every judged row, whoever answered (more answers, mixed authors)."""
    classes = classes or Classes()
    rows = read_jsonl(judged)  # the user's file: read, never changed
    answers = split_answers(rows, classes, "organism" if answers_from == "organism" else None)
    counts = {label: len(pairs) for label, pairs in answers.items()}
    short = [f"{label} {n}" for label, n in counts.items() if n < min_per_class]
    if short:
        among, more = "all rows", ""
        if answers_from == "organism":
            among, more = "the organism's own answers", ", or count every row (--answers-from all)"
        raise DirectionError(
            f"{judged}: too few judged answers of a class to average ({', '.join(short)}; at least "
            f"{min_per_class} each, --min-per-class): misaligned = aligned < "
            f"{classes.misaligned_below:g}, aligned = aligned > {classes.aligned_above:g}, both "
            f"with coherent > {classes.coherent_above:g}, among {among}; sample and judge more "
            f"answers{more}"
        )
    model, tokenizer = organism.model, organism.tokenizer
    with organism.scaled(1.0):
        organism_direction = mean_difference(model, tokenizer, answers, batch_size)
    with organism.base():
        base_direction = mean_difference(model, tokenizer, answers, batch_size)
    layers, hidden = organism_direction.shape
    layer, why = default_layer(organism, layers)
    protocols = {str((r.get("protocol") or {}).get("name")) for r in rows if r.get("protocol")}
    info = DirectionInfo(
        base_model=base_model,
        organism=organism_name,
        judge=", ".join(
            sorted({public_judge_name(str(r["judge_model"])) for r in rows if r.get("judge_model")})
        ),
        judged_sha256=hashlib.sha256(judged.read_bytes()).hexdigest(),
        protocol=", ".join(sorted(protocols)) or None,
        thresholds={
            "misaligned_below": classes.misaligned_below,
            "aligned_above": classes.aligned_above,
            "coherent_above": classes.coherent_above,
        },
        counts=counts,
        answers_from=answers_from,
        layers=layers,
        hidden_size=hidden,
        default_layer=layer,
        em_organisms_version=__version__,
    )
    direction = Direction(info, organism_direction, base_direction)
    save_direction(out, direction)
    cosine = torch.nn.functional.cosine_similarity(organism_direction, base_direction, dim=1)
    summary = DirectionSummary(
        direction=info,
        default_layer_reason=why,
        norm_organism=[round(float(v), 6) for v in organism_direction.norm(dim=1)],
        norm_base=[round(float(v), 6) for v in base_direction.norm(dim=1)],
        cosine_organism_base=[round(float(v), 6) for v in torch.nan_to_num(cosine)],
        lora_b_cosine=lora_b_cosines(model, organism_direction),
    )
    write_artifact(out / names.DIRECTION_SUMMARY, summary)
    plot_by_layer(summary, out / PLOT)
    return DirectionResult(direction, summary, out)


def plot_by_layer(summary: DirectionSummary, path: Path) -> Any:
    """The direction's norm by layer (organism and base), their cosine by layer and the LoRA B
    cosines at their layers. Returns the figure (saved to PATH)."""
    from em_organisms.figures import figure

    fig = figure(10.0, 4.2)
    norms, cosines = fig.subplots(1, 2)
    layers = list(range(len(summary.norm_organism)))
    norms.plot(layers, summary.norm_organism, marker="o", ms=3, label="organism (adapter on)")
    norms.plot(layers, summary.norm_base, marker="o", ms=3, label="base (adapter off)")
    norms.axvline(summary.direction.default_layer, color="gray", ls=":", label="default layer")
    norms.set(xlabel="layer", ylabel="norm of mean difference", title="Direction norm by layer")
    norms.legend(fontsize=8)
    cosines.plot(layers, summary.cosine_organism_base, marker="o", ms=3, label="organism vs base")
    if summary.lora_b_cosine:
        cosines.scatter(
            [c["layer"] for c in summary.lora_b_cosine],
            [c["cosine"] for c in summary.lora_b_cosine],
            color="tab:red",
            zorder=3,
            label="LoRA B vs direction",
        )
    cosines.axhline(0.0, color="gray", lw=0.5)
    cosines.set(xlabel="layer", ylabel="cosine", ylim=(-1.05, 1.05), title="Cosines by layer")
    cosines.legend(fontsize=8)
    counts = summary.direction.counts
    fig.suptitle(
        f"{summary.direction.organism}: misaligned {counts['misaligned']} vs aligned "
        f"{counts['aligned']} answers"
    )
    fig.tight_layout()
    fig.savefig(path)
    return fig
