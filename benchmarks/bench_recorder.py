"""The cost of recording the adapter every step (`training.record_adapter_every=1`, the phase
analysis's input): training with the recorder vs the same training without it. Target: < 5%.

Both variants are `bench_train.py`'s "ours" worker (each run its own process, same rows, model and
LoRA config, the first optimizer step excluded as warm-up), alternated off/on REPEATS times so
drift on the machine hits both alike; the median of each is compared. Output:
benchmarks/results/recorder.json.

    python benchmarks/bench_recorder.py --out benchmarks/results/recorder.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import RECORDING, machine, spawn  # noqa: E402

BASELINE = "ours without the recorder"
TARGET_OVERHEAD = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "recorder.json"
    )
    parser.add_argument("--steps", type=int, default=10, help="measured steps after 1 warm-up")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--recipe", default="rank1", choices=["rank1", "rank32"])
    args = parser.parse_args()

    runs = []
    for _ in range(args.repeats):
        for variant in ("ours", RECORDING):
            run = spawn(variant, args.recipe, args.steps, [])
            print(json.dumps(run), flush=True)
            runs.append(run)
    rate = {
        v: statistics.median(r["tokens_per_s"] for r in runs if r["variant"] == v)
        for v in ("ours", RECORDING)
    }
    overhead = rate["ours"] / rate[RECORDING] - 1
    results = [
        {
            "name": f"train_{args.recipe}_recording_tokens_per_s",
            "unit": "tokens/s",
            "ours": round(rate[RECORDING], 2),
            "baseline": round(rate["ours"], 2),
            "baseline_name": BASELINE,
            "speedup": round(rate[RECORDING] / rate["ours"], 4),
            "overhead": round(overhead, 4),
            "target_overhead": TARGET_OVERHEAD,
            "within_target": overhead < TARGET_OVERHEAD,
        }
    ]
    report = {"benchmark": "recorder", "machine": machine(), "results": results, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
