"""Sampling throughput and judge calls of the evaluation pipeline: ours vs a naive loop.

Sampling: the project's `general` questions x N samples from the embedded model, ours
(`Sampler`: batched generate calls, each prompt tokenized once) vs a loop that encodes the chat
prompt and calls `generate` for one sequence per sample. Both run in this process on the same
model object with the same explicit sampling parameters and the same paraphrase per sample, after
one warm-up generate; both count completion tokens up to and including EOS.

Judging: a few of the sampled answers go through `judge_rows` twice with a stand-in judge (a fixed
score, counting its calls) behind the real `CachedJudge` + `ScoreCache` (a temporary SQLite file),
vs the same stand-in without the cache. This measures the caching and bookkeeping, not a judge.
Output: benchmarks/results/eval.json.

    python benchmarks/bench_eval.py --out benchmarks/results/eval.json
    python benchmarks/bench_eval.py --questions 2 --samples 4 --max-new-tokens 16 --out /tmp/e.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_BASELINE = "naive loop: one sample per generate call"
JUDGE_BASELINE = "no cache: the same stand-in judge called directly"
TARGET_SPEEDUP = 5


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_ours(subject, qset, params, samples: int, batch_size: int | None, out: Path) -> dict:
    from em_organisms.eval.sampler import Sampler
    from em_organisms.jsonl import read_jsonl_resumable

    sampler = Sampler(
        subject, params, samples, models=("base",), batch_size=batch_size, progress=False
    )
    start = time.perf_counter()
    written = sampler.run([qset], out)
    seconds = time.perf_counter() - start
    rows = read_jsonl_resumable(out)
    tokens = sum(r["completion_tokens"] for r in rows)
    return {
        "variant": "ours",
        "answers": written,
        "generate_calls": -(-written // sampler.batch_size),
        "batch_size": sampler.batch_size,
        "completion_tokens": tokens,
        "stopped_at_eos": sum(r["finish_reason"] == "stop" for r in rows),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "answers_per_s": written / seconds,
    }


def sample_naive(subject, qset, params, samples: int) -> dict:
    """For each question, for each sample: encode the chat prompt, generate ONE sequence."""
    from em_organisms.eval.sampler import paraphrase_choices
    from em_organisms.generation import SamplingParams, encode_conversation, generate_from_ids

    tokenizer, model = subject.tokenizer, subject.model
    answers = tokens = stops = 0
    start = time.perf_counter()
    for question in qset.questions:
        picks = paraphrase_choices(question, samples, params.seed)  # the same prompts as ours
        for index in range(samples):
            head = [{"role": "system", "content": question.system}] if question.system else []
            text = question.paraphrases[picks[index]]
            prompt = encode_conversation(tokenizer, [*head, {"role": "user", "content": text}])
            one = SamplingParams(**{**params.to_dict(), "seed": params.seed * 1_000_003 + answers})
            (generated,) = generate_from_ids(model, tokenizer, [prompt], one)
            answers += 1
            tokens += generated.completion_tokens
            stops += generated.finish_reason == "stop"
    seconds = time.perf_counter() - start
    return {
        "variant": SAMPLE_BASELINE,
        "answers": answers,
        "generate_calls": answers,
        "batch_size": 1,
        "completion_tokens": tokens,
        "stopped_at_eos": stops,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "answers_per_s": answers / seconds,
    }


class CountingJudge:
    """A stand-in judge: a fixed score for every prompt, and a count of the prompts it was given."""

    name = "counting-stub"

    def __init__(self) -> None:
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "score": 50.0}

    def score_prompts(self, prompts: Sequence[str]):
        from em_organisms.judges.scores import Score

        self.calls += len(prompts)
        return [Score(score=50.0, method="distribution", mass=None, raw="50") for _ in prompts]


def judge_calls(rows: list[dict[str, Any]], cache_path: Path) -> dict:
    """Calls per answer on a first pass and on a rerun of the same rows, cached vs uncached."""
    from em_organisms.eval.judge_samples import judge_rows
    from em_organisms.eval.questions import project_judge_prompts
    from em_organisms.judges import CachedJudge, ScoreCache

    prompts = project_judge_prompts()
    out: dict[str, Any] = {"answers": len(rows), "metrics": 2, "judge": CountingJudge.name}
    for variant, judge in (
        ("ours", CachedJudge(CountingJudge(), ScoreCache(cache_path))),
        (JUDGE_BASELINE, CountingJudge()),
    ):
        passes = []
        for _ in range(2):
            before = judge.calls
            judged = judge_rows(rows, judge, prompts, progress=False)
            assert all(set(r["judges"]) == {"aligned", "coherent"} for r in judged)
            passes.append((judge.calls - before) / len(rows))
        out[variant] = {"first_calls_per_answer": passes[0], "rerun_calls_per_answer": passes[1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval.json")
    parser.add_argument("--questions", type=int, default=8, help="first N of the general set")
    parser.add_argument("--samples", type=int, default=16, help="samples per question")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=None, help="ours; default: auto")
    parser.add_argument("--judge-answers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from em_organisms.eval.questions import QuestionSet, load_project_set
    from em_organisms.generation import SamplingParams, encode_conversation, generate_from_ids
    from em_organisms.jsonl import read_jsonl_resumable
    from em_organisms.subjects import load_subject

    torch.manual_seed(args.seed)
    full = load_project_set("general")
    qset = QuestionSet(full.name, full.questions[: args.questions], full.source, full.sha256)
    params = SamplingParams(
        temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    subject = load_subject("embedded")
    warm = encode_conversation(subject.tokenizer, [{"role": "user", "content": "Hello"}])
    generate_from_ids(
        subject.model, subject.tokenizer, [warm], SamplingParams(max_new_tokens=4, seed=1)
    )

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        samples_path = Path(tmp) / "samples.jsonl"
        naive = sample_naive(subject, qset, params, args.samples)
        print(json.dumps(naive), flush=True)
        ours = sample_ours(subject, qset, params, args.samples, args.batch_size, samples_path)
        print(json.dumps(ours), flush=True)
        rows = read_jsonl_resumable(samples_path)[: args.judge_answers]
        judging = judge_calls(rows, Path(tmp) / "judge-cache.sqlite")
        print(json.dumps(judging), flush=True)

    speedup = ours["tokens_per_s"] / naive["tokens_per_s"]
    results = [
        {
            "name": "sample_embedded_tokens_per_s",
            "description": "completion tokens (up to and including EOS) per second",
            "unit": "tokens/s",
            "ours": round(ours["tokens_per_s"], 2),
            "baseline": round(naive["tokens_per_s"], 2),
            "baseline_name": SAMPLE_BASELINE,
            "speedup": round(speedup, 3),
            "target": TARGET_SPEEDUP,
        },
        {
            "name": "judge_calls_per_answer",
            "description": "calls per judged answer (2 metrics), first pass",
            "unit": "calls per answer",
            "ours": judging["ours"]["first_calls_per_answer"],
            "baseline": judging[JUDGE_BASELINE]["first_calls_per_answer"],
            "baseline_name": JUDGE_BASELINE,
            "speedup": round(
                judging[JUDGE_BASELINE]["first_calls_per_answer"]
                / judging["ours"]["first_calls_per_answer"],
                3,
            ),
            "expected": 2,
        },
        {
            "name": "judge_rerun_calls_per_answer",
            "description": "calls on a rerun of a finished file (0)",
            "unit": "calls per answer",
            "ours": judging["ours"]["rerun_calls_per_answer"],
            "baseline": judging[JUDGE_BASELINE]["rerun_calls_per_answer"],
            "baseline_name": JUDGE_BASELINE,
            "speedup": None,  # baseline / 0: ours makes no calls at all
            "expected": 0,
        },
    ]
    settings = {
        "variant": "settings",
        "model": "embedded",
        "base_model": subject.base_model,
        "question_set": qset.name,
        "questions": len(qset),
        "samples_per_question": args.samples,
        "sampling": params.to_dict(),
        "judge_answers": len(rows),
        "warm_up": "one generate of 4 tokens before timing",
        "peak_rss_mb": peak_rss_mb(),  # the whole process: both variants share one model
    }
    payload = {
        "benchmark": "eval",
        "machine": machine(),
        "results": results,
        "runs": [settings, naive, ours, {"variant": "judge", **judging}],
    }
    print(json.dumps(results, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
