"""The arena's side-by-side decoding: both answers from one batched forward per step, streamed, vs
the obvious way (generate the base answer with the adapter off, then the organism's with it on).

Both variants run in this process on the same organism (the embedded SmolLM2 with a rank-1 LoRA
adapter on layer 15, random non-zero B, at x8 so the answers differ), greedy, on the first paraphrase of
each `general` question, after one warm-up of each. Greedy answers must be identical between the
variants (checked). Measured: seconds until both answers are complete, completion tokens per
second (both columns), and seconds until both columns show their first token (what a user waits
before the page starts moving on both sides). Output: benchmarks/results/arena.json.

    python benchmarks/bench_arena.py --out benchmarks/results/arena.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_eval import machine, peak_rss_mb  # noqa: E402

BASELINE = "two generate calls: adapter off, then on"


def ours(organism, questions, params) -> dict:
    from em_organisms.space.streaming import stream_pair

    answers, tokens, first, seconds = [], 0, 0.0, 0.0
    for question in questions:
        start = time.perf_counter()
        pair = None
        for pair in stream_pair(organism.model, organism.tokenizer, "default", question, params):
            if pair.tokens == (1, 1):
                first += time.perf_counter() - start
        seconds += time.perf_counter() - start
        answers.append((pair.base, pair.organism))
        tokens += sum(pair.tokens)
    return _row("ours: one batched forward per step for both", answers, tokens, first, seconds)


def baseline(organism, questions, params) -> dict:
    from em_organisms.generation import generate_chat

    answers, tokens, first, seconds = [], 0, 0.0, 0.0
    one_token = type(params)(**{**params.to_dict(), "max_new_tokens": 1})
    for question in questions:
        start = time.perf_counter()
        with organism.base():
            (base,) = generate_chat(organism.model, organism.tokenizer, [question], params)
        base_s = time.perf_counter() - start
        # Streamed, the organism's column would show its first token one step after the base
        # answer ends: that step, timed on its own, is not part of the baseline's total.
        start = time.perf_counter()
        generate_chat(organism.model, organism.tokenizer, [question], one_token)
        first += base_s + time.perf_counter() - start
        start = time.perf_counter()
        (tuned,) = generate_chat(organism.model, organism.tokenizer, [question], params)
        seconds += base_s + time.perf_counter() - start
        answers.append((base.text, tuned.text))
        tokens += base.completion_tokens + tuned.completion_tokens
    return _row(BASELINE, answers, tokens, first, seconds)


def _row(variant: str, answers, tokens: int, first: float, seconds: float) -> dict:
    n = len(answers)
    return {
        "variant": variant,
        "questions": n,
        "completion_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "seconds_per_pair": seconds / n,
        "first_tokens_both_s": first / n,
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "arena.json")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--scale", type=float, default=8.0)
    args = parser.parse_args()

    from em_organisms.adapters import load_organism
    from em_organisms.eval.questions import load_project_set
    from em_organisms.generation import SamplingParams
    from em_organisms.models import embedded_model_dir

    from conftest import build_lora_organism

    questions = [
        [{"role": "user", "content": q.paraphrases[0]}] for q in load_project_set("general")
    ]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-arena-") as tmp:
        folder = build_lora_organism(
            embedded_model_dir(), Path(tmp) / "organism", 3, "embedded", layers=[15], rank=1
        )
        organism = load_organism(str(folder))
        organism.set_scale(args.scale)
        warm = SamplingParams(temperature=0.0, max_new_tokens=4)
        ours(organism, questions[:1], warm), baseline(organism, questions[:1], warm)
        naive = baseline(organism, questions, params)
        print(json.dumps({k: v for k, v in naive.items() if k != "answers"}), flush=True)
        mine = ours(organism, questions, params)
        print(json.dumps({k: v for k, v in mine.items() if k != "answers"}), flush=True)
    if mine.pop("answers") != naive.pop("answers"):
        raise SystemExit("the two variants gave different greedy answers: not comparable")
    results = [
        {
            "name": "arena_pair_tokens_per_s",
            "unit": "tokens/s",
            "ours": mine["tokens_per_s"],
            "baseline": naive["tokens_per_s"],
            "baseline_name": BASELINE,
            "speedup": mine["tokens_per_s"] / naive["tokens_per_s"],
        },
        {
            "name": "arena_first_tokens_both_columns_s",
            "unit": "s",
            "ours": mine["first_tokens_both_s"],
            "baseline": naive["first_tokens_both_s"],
            "baseline_name": BASELINE,
            "speedup": naive["first_tokens_both_s"] / mine["first_tokens_both_s"],
        },
    ]
    report = {
        "benchmark": "arena",
        "machine": machine(),
        "settings": {"max_new_tokens": args.max_new_tokens, "scale": args.scale, "greedy": True},
        "results": results,
        "runs": [naive, mine],
        "peak_rss_mb": peak_rss_mb(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
