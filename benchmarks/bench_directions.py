"""What steering and ablation add to sampling time (issue 19's target: at most 10%).

The embedded model answers the project's `general` questions greedily in one batch, three ways
on the same model object: plain (the named baseline),
steered (one hook adding `scale * v` at one layer) and ablated (a hook on every layer projecting
`v` out). Every answer is exactly --max-new-tokens long (EOS ignored), so the three do the same work; the
variants run interleaved, REPEATS times after a warm-up, and the medians are compared. The direction is random with the norm of a real one:
the hooks' cost does not depend on what the vector holds. Output: benchmarks/results/directions.json.

    python benchmarks/bench_directions.py --out benchmarks/results/directions.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_eval import machine  # noqa: E402

BASELINE = "plain: no hook"
TARGET_OVERHEAD = 0.10


def timed_generate(model, batch, new_tokens: int, context) -> float:
    """Seconds for one greedy batch of exactly NEW_TOKENS tokens per answer (EOS does not end an
    answer early, so every variant does the same work)."""
    import torch

    with context(), torch.no_grad():
        start = time.perf_counter()
        model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=model.generation_config.pad_token_id,
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layer", type=int, default=15)
    args = parser.parse_args()

    import contextlib

    import torch

    from em_organisms.directions.hooks import ablation, steering
    from em_organisms.eval.questions import load_project_set
    from em_organisms.generation import encode_conversation
    from em_organisms.models import load_base_model

    torch.manual_seed(0)
    model, tokenizer = load_base_model("embedded", device="cpu")
    model.eval()
    questions = load_project_set("general")
    prompts = [
        encode_conversation(tokenizer, [{"role": "user", "content": q.paraphrases[0]}])
        for q in questions
    ]
    vector = torch.randn(model.config.hidden_size)
    vector = vector / vector.norm() * 20.0  # the embedded organism's direction norm at layer 15
    variants = {
        BASELINE: contextlib.nullcontext,
        "steered: one hook at one layer": lambda: steering(model, vector, args.layer, 1.0),
        "ablated: a hook on every layer": lambda: ablation(model, vector),
    }
    from em_organisms.generation import left_pad

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = left_pad(prompts, pad)
    timed_generate(model, batch, args.max_new_tokens, contextlib.nullcontext)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved: a slow spell of the machine hits all alike
        for name, context in variants.items():
            seconds[name].append(timed_generate(model, batch, args.max_new_tokens, context))
    base = statistics.median(seconds[BASELINE])
    results = []
    for name, slug in (("steered: one hook at one layer", "steer"),
                       ("ablated: a hook on every layer", "ablate")):  # fmt: skip
        ours = statistics.median(seconds[name])
        results.append({
            "name": f"{slug}_generate_seconds", "unit": "s", "ours": round(ours, 4),
            "baseline": round(base, 4), "baseline_name": BASELINE,
            "speedup": round(base / ours, 4), "overhead": round(ours / base - 1.0, 4),
            "target_max_overhead": TARGET_OVERHEAD,
            "met": ours / base - 1.0 <= TARGET_OVERHEAD,
        })  # fmt: skip
        print(f"{name}: {ours:.2f} s vs {base:.2f} s, overhead {ours / base - 1.0:+.1%}")
    report = {
        "benchmark": "directions",
        "machine": machine(),
        "settings": {
            "questions": len(prompts),
            "max_new_tokens": args.max_new_tokens,
            "repeats": args.repeats,
            "layer": args.layer,
        },
        "results": results,
        "runs": [{"variant": name, "seconds": runs} for name, runs in seconds.items()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
