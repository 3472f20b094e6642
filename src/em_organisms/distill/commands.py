"""`em-organisms judge distill` (`judge agreement`, which measures any judge, is in `eval`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from em_organisms.argtypes import integer

AddParser = Callable[[str, str], argparse.ArgumentParser]

DISTILL_EXAMPLES = """examples:
  em-organisms judge distill judges/minilm-l6_gpt4o-em.yaml
  em-organisms judge distill judges/minilm-l6_gpt4o-em.yaml --max-shards 10   # encode in pieces
  em-organisms judge distill judges/minilm-l6_gpt4o-em.yaml --resume
  em-organisms judge distill judges/minilm-l6_gpt4o-em.yaml --device cuda   # GPU recipe
  em-organisms judge distill my-judge.yaml --data runs/eval/judged.jsonl --set data.sha256=null

The student lands in OUTPUT_DIR/student (default runs/judges/NAME/student); use it with
--judge distilled:runs/judges/NAME/student. Encoder features are cached under
$EM_ORGANISMS_CACHE/judge-features (resumable shards), head checkpoints under OUTPUT_DIR."""


def _cmd_distill(args: argparse.Namespace) -> int:
    from em_organisms.distill.run import distill

    result = distill(
        args.recipe,
        args.output_dir,
        data=args.data,
        overrides=args.set,
        resume=args.resume,
        features_dir=args.features_dir,
        max_shards=args.max_shards,
        backbone_dir=args.backbone_dir,
        device=args.device,
    )
    if result.student_dir is None:
        print(
            f"encoding not finished ({args.max_shards} new shards this run); features so far are in "
            f"{', '.join(result.summary['features'])}: run the same command again to go on"
        )
        return 0
    s = result.summary
    student, base = s["heldout"]["student"], s["heldout"]["baseline"]
    print(f"student written to {result.student_dir}")
    for who, r in (("student", student), ("TF-IDF baseline", base)):
        print(
            f"  held-out ({r['n']} answers) {who}: AUROC aligned {r['auroc_aligned']}, coherent "
            f"{r['auroc_coherent']}, Spearman aligned {r['spearman_aligned']}, mean EM error "
            f"{r.get('mean_abs_error_pp')} pp over conditions"
        )
    hl = s["handlabelled"]["student"]
    print(
        f"  hand-labelled: AUROC aligned {hl.get('auroc_aligned_coherent')} on coherent answers "
        f"({hl['auroc_aligned']} on all), coherent {hl['auroc_coherent']}"
    )
    print(f"  details: {result.out_dir / 'summary.json'}")
    return 0


def register_distill_commands(add: AddParser) -> None:
    p = add("judge-distill", "Distil a student judge from a file of teacher-scored answers.")
    p.prog = "em-organisms judge distill"
    p.add_argument("recipe", type=Path, help="judge recipe YAML (see judges/)")
    p.add_argument("--data", type=Path, help="teacher file (default: the recipe's data.path)")
    p.add_argument("--output-dir", type=Path, help="default runs/judges/NAME")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field"
    )
    p.add_argument("--resume", action="store_true", help="continue from the last head checkpoint")
    p.add_argument("--features-dir", type=Path, help="feature cache (default under the cache)")
    p.add_argument(
        "--max-shards",
        type=integer(1),
        help="encode at most N new shards of 2048 answers, then stop",
    )
    p.add_argument(
        "--backbone-dir",
        help="a local encoder folder (safetensors) instead of the pinned all-MiniLM-L6-v2 wheel",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where the encoder runs: cpu (default) or cuda (the GPU recipe: the whole file in "
        "minutes); the features are the same up to bf16 rounding, the head trains on the CPU",
    )
    p.set_defaults(func=_cmd_distill)
