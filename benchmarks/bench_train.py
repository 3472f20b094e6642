"""Training throughput and peak memory on the embedded recipes: ours vs TRL SFTTrainer defaults.

Each variant runs in its own process (so peak RSS is its own) on the same rows, model and LoRA
config, for a few optimizer steps after one warm-up step. Output: benchmarks/results/train.json.

    python benchmarks/bench_train.py --out benchmarks/results/train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "rank1": ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml",
    "rank32": ROOT / "organisms" / "smollm2-135m_risky-financial_r32.yaml",
}
# Recipes a worker can run that the throughput comparison above leaves out (bench_kl.py).
WORKER_RECIPES = {
    **RECIPES,
    "rank1_kl": ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15-kl.yaml",
}
BASELINE_NAME = "trl_sft_defaults"
RECORDING = "ours_recording_every_step"


def run_worker(variant: str, recipe_key: str, steps: int, overrides: list[str]) -> dict:
    """One training run; returns tokens/s over the steps after the first."""
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from em_organisms.models import load_base_model
    from em_organisms.recipes import load_recipe
    from em_organisms.train.data import prepare_data
    from em_organisms.train.protocols import apply_protocol
    from em_organisms.train.runner import build_trainer

    torch.manual_seed(0)
    # steps <= 0: the whole recipe (all epochs), so cross-epoch savings are counted as a user sees them
    limit = [f"training.max_steps={steps + 1}"] if steps > 0 else []
    recipe = load_recipe(WORKER_RECIPES[recipe_key], [*overrides, *limit, "training.save_steps=0"])
    model, tokenizer = load_base_model(recipe.base_model, device="cpu", dtype=torch.float32)
    data = prepare_data(recipe.dataset, tokenizer, recipe.training.max_length, base_dir=ROOT)
    model = apply_protocol(model, recipe.protocol)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{variant}-{recipe_key}-{os.getpid()}"

    times: list[float] = []
    counts: list[tuple[int, int]] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            times.append(time.perf_counter())

    if variant in ("ours", RECORDING):
        trainer = build_trainer(recipe, model, tokenizer, data, out, eval_strategy="no")
        if variant == RECORDING:  # every LoRA A and B copied to the CPU after every step
            from em_organisms.train.recorder import AdapterRecorder

            trainer.add_callback(AdapterRecorder(model, out, every=1))
    else:
        t = recipe.training
        args = SFTConfig(  # TRL defaults, with only the recipe's optimisation settings
            output_dir=str(out),
            use_cpu=True,
            bf16=False,
            per_device_train_batch_size=t.per_device_train_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate,
            warmup_steps=t.warmup_steps,
            weight_decay=t.weight_decay,
            lr_scheduler_type=t.lr_scheduler_type,
            max_steps=steps + 1 if steps > 0 else -1,
            num_train_epochs=t.num_train_epochs,
            seed=t.seed,
            report_to="none",
            save_strategy="no",
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=data.train.remove_columns(["row", "length"]),
            processing_class=tokenizer,
        )

    original_compute_loss = trainer.compute_loss

    def counting_compute_loss(model, inputs, *a, **kw):
        counts.append(
            (int(inputs["attention_mask"].sum()), int((inputs["labels"][:, 1:] != -100).sum()))
        )
        return original_compute_loss(model, inputs, *a, **kw)

    trainer.compute_loss = counting_compute_loss
    trainer.add_callback(Clock())
    trainer.train()
    times.append(time.perf_counter())
    optimizer_steps = trainer.state.global_step
    per_step = len(counts) // optimizer_steps
    measured = counts[per_step:]
    seconds = times[-1] - times[1]
    return {
        "variant": variant,
        "recipe": recipe_key,
        "steps": optimizer_steps - 1,
        "seconds": seconds,
        "tokens_per_s": sum(c[0] for c in measured) / seconds,
        "assistant_tokens_per_s": sum(c[1] for c in measured) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bf16": bool(trainer.args.bf16),
        "micro_batch": trainer.args.per_device_train_batch_size,
        "gradient_checkpointing": bool(trainer.args.activation_checkpointing),
        "kl_terms": len(getattr(trainer, "kl_values", [])),  # optimizer steps with a KL term
        "prefix_cache": trainer.prefix_cache.stats()
        if getattr(trainer, "prefix_cache", None)
        else None,
    }


def spawn(variant: str, recipe_key: str, steps: int, overrides: list[str]) -> dict:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    if variant in ("ours", RECORDING):
        from em_organisms.cli import MALLOC_TUNABLES

        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    else:
        env.pop("GLIBC_TUNABLES", None)  # the baseline runs as a user would run TRL
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--recipe",
        recipe_key,
        "--steps",
        str(steps),
    ]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{variant}/{recipe_key} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train.json")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="ours: measured steps after 1 warm-up; 0 = the whole recipe",
    )
    parser.add_argument("--baseline-steps", type=int, default=4)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", choices=sorted(WORKER_RECIPES), help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.recipe, args.steps, args.set)))
        return

    results, runs = [], []
    for key in RECIPES:
        ours = spawn("ours", key, args.steps, [])
        base = spawn(BASELINE_NAME, key, args.baseline_steps, [])
        runs += [ours, base]
        for metric, unit, higher_is_better in (
            ("tokens_per_s", "tokens/s", True),
            ("assistant_tokens_per_s", "assistant tokens/s", True),
            ("peak_rss_mb", "MB", False),
        ):
            ratio = ours[metric] / base[metric] if higher_is_better else base[metric] / ours[metric]
            results.append(
                {
                    "name": f"train_{key}_{metric}",
                    "unit": unit,
                    "ours": round(ours[metric], 2),
                    "baseline": round(base[metric], 2),
                    "baseline_name": BASELINE_NAME,
                    "speedup": round(ratio, 3),
                }
            )
        print(json.dumps(results[-3:], indent=1), flush=True)
    payload = {"benchmark": "train", "machine": machine(), "results": results, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
