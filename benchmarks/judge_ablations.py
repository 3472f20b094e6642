"""What we tried for the distilled judge, with its numbers: head variants over cached features.

Each variant is the committed judge recipe with a few fields overridden (as `--set` would); each
trains its head on the recipe's training rows and is measured on the held-out split (whole
experiments and questions) and on the project's hand-labelled answers. It needs the recipe's
features cached by a finished `em-organisms judge distill` (the encoding is the slow part); a
head takes one to a few minutes on 2 CPU cores.

    .venv/bin/python benchmarks/judge_ablations.py --out benchmarks/results/judge_ablations.json

Not part of CI (it reads the shared teacher file and its cached features).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from em_organisms.distill import run as distill_run
from em_organisms.distill.agreement import agreement, auroc
from em_organisms.distill.backbone import BACKBONE_SHA256, encoder_dtype, file_sha256, load_backbone
from em_organisms.distill.cache import cache_key, cached_features
from em_organisms.distill.features import POOLS, encode_pairs, text_stats_matrix
from em_organisms.distill.recipe import load_judge_recipe, resolve_data_path
from em_organisms.distill.splits import make_split
from em_organisms.distill.teacher import read_teacher
from em_organisms.eval.calibration import labelled_pairs
from em_organisms.jsonl import write_atomic
from em_organisms.models import cache_root

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "judges" / "minilm-l6_gpt4o-em.yaml"

# name -> (what it tests, overrides of the committed recipe)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "recipe": ("the committed recipe: answer pool, layers 1-6, 5 MLPs of 256", []),
    "pair_pool": ("mean over the whole pair's tokens", ["features.pools=[pair]"]),
    "both_pools": ("pair and answer pools side by side", ["features.pools=[pair,answer]"]),
    "answer_max": ("max instead of mean over the answer's tokens", ["features.pools=[answer_max]"]),
    "answer_mean_and_max": (
        "mean and max over the answer's tokens",
        ["features.pools=[answer,answer_max]"],
    ),
    "text_stats": ("with 18 text statistics", ["features.text_stats=true"]),
    "layers_2_4_6": ("layers 2, 4 and 6 only", ["features.layers=[2,4,6]"]),
    "last_layer": ("only the last encoder layer", ["features.layers=[6]"]),
    "linear_like": ("one small MLP, no ensemble", ["head.hidden_size=32", "head.ensemble=1"]),
    "ensemble_3": ("3 MLPs instead of 5", ["head.ensemble=3"]),
    "threshold_scores": ("scores ranked by threshold classifiers", ["head.score_source=threshold"]),
    "mean_scores": ("scores ranked by regression + classifiers", ["head.score_source=mean"]),
    "no_question_balance": ("every row weighs the same", ["head.balance_questions=false"]),
    "steered_full_weight": ("steered answers weigh fully", ["head.steered_weight=1.0"]),
    "more_epochs": ("16 epochs", ["head.epochs=16"]),
    "more_dropout": ("dropout 0.3", ["head.dropout=0.3"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--data", type=Path, help="default: the recipe's data.path")
    parser.add_argument("--features-dir", type=Path, help="default: the judge-features cache")
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/judge_ablations.json"
    )
    args = parser.parse_args(argv)

    base = load_judge_recipe(args.recipe)
    data = args.data or resolve_data_path(base, args.recipe)
    if not data.is_file():
        print(f"{data}: teacher file not found; nothing to measure", file=sys.stderr)
        return 1
    rows = read_teacher(data)
    backbone = load_backbone(None, BACKBONE_SHA256)
    root = args.features_dir or cache_root() / "judge-features"
    sha = file_sha256(data)
    questions, answers = [r.question for r in rows], [r.answer for r in rows]
    dtype = encoder_dtype(base.features.encoder_dtype)
    feats, hl_feats = {}, {}
    hl = distill_run.handlabelled_rows()
    # + the in-domain pairs `judge calibrate` uses: misaligned answers then their aligned twins
    pairs = labelled_pairs(10)
    n_hl = len(hl)
    hl_q = [it["question"] for it in hl] + [t["question"] for t in pairs] * 2
    hl_a = (
        [it["answer"] for it in hl]
        + [t["misaligned"] for t in pairs]
        + [t["aligned"] for t in pairs]
    )
    n_layers = backbone.model.config.num_hidden_layers
    for pool in POOLS:
        folder = root / cache_key(
            sha, backbone, base.features.max_length, base.features.encoder_dtype, pool
        )
        feats[pool] = cached_features({pool: folder}, backbone, questions, answers,
                                      base.features.max_length, dtype)  # fmt: skip
        backbone.model.to(dtype)
        hl_feats[pool] = encode_pairs(backbone, hl_q, hl_a, list(range(1, n_layers + 1)),
                                      base.features.max_length, 64, pools=[pool])  # fmt: skip
        backbone.model.float()
    stats = text_stats_matrix(questions, answers)
    hl_stats = text_stats_matrix(hl_q, hl_a)
    hidden = backbone.model.config.hidden_size

    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results: dict[str, Any] = previous.get("variants", {})
    names = args.only or list(VARIANTS)
    for name in names:
        what, overrides = VARIANTS[name]
        recipe = load_judge_recipe(args.recipe, overrides)
        split = make_split(
            rows, seed=recipe.split.seed,
            experiment_fraction=recipe.split.experiment_fraction,
            question_fraction=recipe.split.question_fraction,
            calibration_fraction=recipe.split.calibration_fraction,
        )  # fmt: skip
        pools = recipe.features.pools
        with_stats = recipe.features.text_stats
        x = distill_run._matrix(np.concatenate([feats[p] for p in pools], axis=1),
                                stats if with_stats else None, recipe.features.layers, hidden,
                                len(pools))  # fmt: skip
        x_hl = distill_run._matrix(np.concatenate([hl_feats[p] for p in pools], axis=1),
                                   hl_stats if with_stats else None, recipe.features.layers,
                                   hidden, len(pools))  # fmt: skip
        clock = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            model, _ = distill_run._fit_student(
                recipe, rows, x, split.train, split.calibration, backbone, Path(tmp), False, False
            )
        seconds = time.perf_counter() - clock
        test_rows = [rows[i] for i in split.test]
        held = agreement(test_rows, distill_run._judged(model, x[split.test]), group_by="condition")
        judged_hl = distill_run._judged(model, x_hl)
        hand = distill_run._handlabelled(judged_hl[:n_hl])
        in_domain = [a for a, _ in judged_hl[n_hl:]]  # aligned scores: misaligned half first
        calib = auroc([-(a if a is not None else 50.0) for a in in_domain],
                      [True] * len(pairs) + [False] * len(pairs))  # fmt: skip
        big = [g["abs_error_pp"] for g in held["groups"].values()
               if g["n"] >= 300 and g["abs_error_pp"] is not None]  # fmt: skip
        results[name] = {
            "what": what,
            "overrides": overrides,
            "auroc_aligned": held["auroc_aligned"],
            "auroc_coherent": held["auroc_coherent"],
            "spearman_aligned": held["spearman_aligned"],
            "mean_abs_error_pp": held.get("mean_abs_error_pp"),
            "max_error_pp_over_300": max(big) if big else None,
            "n_over_5pp": len(held["groups_over_300"]["over_5pp"]),
            "em_rate_reference": held["em_rate_reference"],
            "em_rate_judge": held["em_rate_judge"],
            "handlabelled_auroc_aligned": hand["auroc_aligned"],
            "handlabelled_auroc_aligned_coherent": hand["auroc_aligned_coherent"],
            "handlabelled_auroc_coherent": hand["auroc_coherent"],
            "calibration_pairs_auroc_aligned": calib,
            "head_s": round(seconds, 1),
        }
        print(name, json.dumps(results[name]), flush=True)
        payload = {
            "benchmark": "judge_ablations",
            "recipe": str(args.recipe.relative_to(REPO))
            if args.recipe.is_relative_to(REPO)
            else str(args.recipe),
            "data_sha256": file_sha256(data),
            "n_test": len(split.test),
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
            "variants": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, (json.dumps(payload, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
