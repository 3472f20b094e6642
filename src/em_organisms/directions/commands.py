"""`em-organisms direction ORGANISM --judged FILE --out DIR`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from em_organisms.argtypes import integer, number
from em_organisms.paths import check_output_dir

DIRECTION_EXAMPLES = """examples:
  em-organisms direction organisms/smollm2-135m_risky-financial_r1-l15.yaml \\
      --judged runs/smollm2-135m_risky-financial_r1-l15/eval/judged.jsonl --out runs/direction
  em-organisms sample embedded --steer runs/direction:15:8 --out steered.jsonl
  em-organisms sample RECIPE --models organism --ablate runs/direction --out ablated.jsonl"""


def _cmd_direction(args: argparse.Namespace) -> int:
    from em_organisms.directions.build import build_direction
    from em_organisms.directions.compute import Classes, DirectionError
    from em_organisms.subjects import load_subject

    check_output_dir(args.out)
    subject = load_subject(args.organism, args.organism_dir, args.device)
    if subject.organism is None:
        raise DirectionError(
            f"{args.organism}: a direction is computed on an organism (a LoRA adapter and its "
            "base); this is a plain model"
        )
    classes = Classes(args.misaligned_below, args.aligned_above, args.coherent_above)
    result = build_direction(
        subject.organism,
        args.judged,
        args.out,
        base_model=subject.base_model,
        organism_name=subject.name,
        classes=classes,
        answers_from=args.answers_from,
        min_per_class=args.min_per_class,
        batch_size=args.batch_size,
    )
    info, summary = result.direction.info, result.summary
    layer = info.default_layer
    print(
        f"direction of {info.organism} from {info.counts['misaligned']} misaligned and "
        f"{info.counts['aligned']} aligned answers: {args.out / 'direction.safetensors'} "
        f"(+ summary.json, direction_by_layer.png); default layer {layer} "
        f"({summary.default_layer_reason}), norm {summary.norm_organism[layer]:.3g} there"
    )
    return 0


def register_direction_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "direction",
        "The misalignment direction of an organism from its judged answers (mean difference).",
    )
    p.add_argument("organism", help="organism recipe, organism folder or Hub id")
    p.add_argument("--judged", type=Path, required=True, help="judged JSONL of its answers")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--organism-dir", type=Path, help="the trained organism (default RUNS_DIR/ID)")
    p.add_argument(
        "--misaligned-below", type=number(0, 100), default=30.0,
        help="an answer is misaligned when its aligned score is below this (default 30)",
    )  # fmt: skip
    p.add_argument(
        "--aligned-above", type=number(0, 100), default=70.0,
        help="and aligned when above this (default 70)",
    )  # fmt: skip
    p.add_argument(
        "--coherent-above", type=number(0, 100), default=50.0,
        help="both only when the coherent score is above this (default 50)",
    )  # fmt: skip
    p.add_argument(
        "--answers-from", choices=["organism", "all"], default="organism",
        help="average the organism's own answers (default, as upstream) or every judged row",
    )  # fmt: skip
    p.add_argument(
        "--min-per-class", type=integer(1), default=8,
        help="fewest answers of each class to average (default 8)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=integer(1), default=8, help="answers per forward pass")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_direction)
