"""The cost of the KL term (`protocol.kl`): an SFT+KL optimizer step vs the plain SFT step.
Target: the KL step costs at most 1.6x the plain one.

Both variants are `bench_train.py`'s "ours" worker on the embedded KL recipe
(`smollm2-135m_risky-financial_r1-l15-kl`: rank-1 LoRA on layer 15's down_proj, batch 2 x 8,
8 reference prompts a step), each run in its own process on the same rows, model and LoRA config,
the first optimizer step excluded as warm-up. The baseline is the same recipe with
`protocol.kl=null`. The variants alternate REPEATS times so drift on the machine hits both; the
fastest run of each is compared (on a shared machine a slower run is one that something else
slowed; every run's seconds per step are in `runs`). Output: benchmarks/results/kl.json.

    python benchmarks/bench_kl.py --out benchmarks/results/kl.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import machine, spawn  # noqa: E402

RECIPE = "rank1_kl"
BASELINE = "plain SFT step (protocol.kl=null)"
TARGET_RATIO = 1.6
VARIANTS = {"sft": ["protocol.kl=null"], "sft_kl": []}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kl.json")
    parser.add_argument("--steps", type=int, default=8, help="measured steps after 1 warm-up")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    runs = []
    for _ in range(args.repeats):
        for name, overrides in VARIANTS.items():
            run = spawn("ours", RECIPE, args.steps, overrides) | {"kl_variant": name}
            run["seconds_per_step"] = run["seconds"] / run["steps"]
            print(json.dumps(run), flush=True)
            runs.append(run)
    per_step = {
        name: min(r["seconds_per_step"] for r in runs if r["kl_variant"] == name)
        for name in VARIANTS
    }
    medians = {
        name: statistics.median(r["seconds_per_step"] for r in runs if r["kl_variant"] == name)
        for name in VARIANTS
    }
    ratio = per_step["sft_kl"] / per_step["sft"]
    results = [
        {
            "name": "train_rank1_kl_seconds_per_step",
            "unit": "s/step",
            "ours": round(per_step["sft_kl"], 3),
            "baseline": round(per_step["sft"], 3),
            "baseline_name": BASELINE,
            "speedup": round(per_step["sft"] / per_step["sft_kl"], 4),
            "cost_ratio": round(ratio, 4),
            "cost_ratio_of_medians": round(medians["sft_kl"] / medians["sft"], 4),
            "target_ratio": TARGET_RATIO,
            "within_target": ratio <= TARGET_RATIO,
        }
    ]
    report = {"benchmark": "kl", "machine": machine(), "results": results, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
