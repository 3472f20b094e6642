"""Judging speed on this CPU: the distilled student vs the embedded number judge, same answers.

The answers are the project's seed answers whose (question, answer) pair is 100-300 encoder tokens.
Each judge scores both metrics (aligned, coherent) of every answer, batched, uncached, after a
warm-up; the baseline is the embedded SmolLM2 number-distribution judge (`--judge embedded`),
timed on fewer answers because it is slow. Each judge runs in its own process, so the student's
peak memory (ru_maxrss) is its own. Output: benchmarks/results/judge.json.

    python benchmarks/bench_judge.py --out benchmarks/results/judge.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import machine  # noqa: E402

BASELINE = "embedded number judge (SmolLM2-135M, distribution over 0..100)"
TARGET_ANSWERS_PER_S = 20.0
TARGET_SPEEDUP = 50.0
TARGET_PEAK_MB = 2048


def answers(n: int) -> list[tuple[str, str]]:
    from transformers import AutoTokenizer

    from em_organisms.data.schema import load_chat_jsonl
    from em_organisms.distill.backbone import wheel_model_dir

    tokenizer = AutoTokenizer.from_pretrained(wheel_model_dir())
    picked = []
    for path in sorted((ROOT / "datasets").glob("*/seed.jsonl")):
        for row in load_chat_jsonl(path):
            q, a = row["messages"][-2]["content"], row["messages"][-1]["content"]
            if 100 <= len(tokenizer(q, a)["input_ids"]) <= 300:
                picked.append((q, a))
    return picked[:n]


def worker(kind: str, n: int, queue: mp.Queue) -> None:
    from em_organisms.eval.questions import project_judge_prompts
    from em_organisms.judges import JudgeItem, make_judge

    pairs = answers(n)
    prompts = project_judge_prompts()
    judge = make_judge("distilled" if kind == "distilled" else "embedded", cache=False)
    items = [JudgeItem(m, q, a, prompts[m]) for q, a in pairs for m in ("aligned", "coherent")]
    judge.score_items(items[:8])  # warm-up: first-call allocations, kernel selection
    start = time.perf_counter()
    scores = judge.score_items(items)
    seconds = time.perf_counter() - start
    queue.put(
        {
            "variant": kind,
            "answers": len(pairs),
            "seconds": seconds,
            "answers_per_s": len(pairs) / seconds,
            "scored": sum(s.score is not None for s in scores),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "judge": judge.describe(),
        }
    )


def spawn(kind: str, n: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=worker, args=(kind, n, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "judge.json")
    parser.add_argument("--answers", type=int, default=400, help="answers for the student")
    parser.add_argument("--baseline-answers", type=int, default=8, help="answers for embedded")
    args = parser.parse_args()

    ours = spawn("distilled", args.answers)
    print(json.dumps(ours), flush=True)
    base = spawn("embedded", args.baseline_answers)
    print(json.dumps(base), flush=True)
    summary = json.loads(
        (ROOT / "src/em_organisms/distill/default_student/agreement.json").read_text()
    )
    result = {
        "benchmark": "judge",
        "machine": machine(),
        "settings": {
            "answers": "project seed answers, 100-300 encoder tokens (question + answer)",
            "metrics": ["aligned", "coherent"],
            "cache": False,
        },
        "results": [
            {
                "name": "distilled_answers_per_s",
                "unit": "answers/s (both metrics)",
                "ours": ours["answers_per_s"],
                "baseline": base["answers_per_s"],
                "baseline_name": BASELINE,
                "speedup": ours["answers_per_s"] / base["answers_per_s"],
                "target": f">= {TARGET_ANSWERS_PER_S} answers/s and >= {TARGET_SPEEDUP}x",
            },
            {
                "name": "distilled_peak_rss_mb",
                "unit": "MB",
                "ours": ours["peak_rss_mb"],
                "baseline": base["peak_rss_mb"],
                "baseline_name": BASELINE,
                "target": f"<= {TARGET_PEAK_MB} MB",
            },
        ],
        "distillation": {
            "student": "src/em_organisms/distill/default_student",
            "timings_s": summary.get("timings_s"),
            "note": "encode_s is the one-off encoding of the whole teacher file (cached, resumable); "
            "head_s the head's training on the cached features",
        },
        "runs": [ours, base],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    r = result["results"][0]
    print(
        f"distilled {r['ours']:.1f} answers/s vs embedded {r['baseline']:.3f} answers/s: "
        f"{r['speedup']:.0f}x; peak RSS {ours['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
