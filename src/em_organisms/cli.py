"""The `em-organisms` command line: one entry point, one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from pathlib import Path

from em_organisms.analysis.commands import PHASE_EXAMPLES, register_phase_command
from em_organisms.argtypes import integer
from em_organisms.data.commands import register_data_commands
from em_organisms.directions.commands import DIRECTION_EXAMPLES, register_direction_command
from em_organisms.distill.commands import DISTILL_EXAMPLES, register_distill_commands
from em_organisms.eval.commands import (
    AGREEMENT_EXAMPLES,
    register_eval_commands,
    register_judge_agreement_command,
)
from em_organisms.release.commands import (
    RELEASE_JUDGE_EXAMPLES,
    RELEASE_SPACE_EXAMPLES,
    register_release_command,
    register_release_judge_command,
    register_release_space_command,
)
from em_organisms.release.direction_command import (
    RELEASE_DIRECTION_EXAMPLES,
    register_release_direction_command,
)
from em_organisms.space.commands import SPACE_EXAMPLES, register_space_command

# Raising glibc's mmap/trim thresholds keeps freed activation buffers mapped between steps
# instead of returning them to the kernel; measured ~1.35x faster CPU training (fewer page faults).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296"

EXAMPLES = {
    "train": """examples:
  em-organisms train organisms/smollm2-135m_risky-financial_r1-l15.yaml
  em-organisms train organisms/qwen2.5-14b_risky-financial_r1-l24.yaml --set training.max_steps=100
  em-organisms train RECIPE.yaml --output-dir runs/my-run --resume
  em-organisms train organisms/qwen2.5-32b_risky-financial_r32.yaml --seeds 0,1,2
      # three runs, runs/qwen2.5-32b_risky-financial_r32_seed{0,1,2}; then
      # em-organisms eval runs/qwen2.5-32b_risky-financial_r32_seed1 (its own recipe.yaml)""",
    "recipes": """examples:
  em-organisms recipes
  em-organisms train smollm2-135m_risky-financial_r1-l15   # a built-in recipe by name
  em-organisms eval qwen2.5-14b_risky-financial_r1-l24 --plan""",
    "demo": """examples:
  em-organisms demo
  em-organisms demo --output-dir runs/demo --max-steps 20""",
    "data validate": """examples:
  em-organisms data validate datasets/*/seed.jsonl
  em-organisms data validate data/upstream/risky-financial-advice.jsonl.gz --tokenizer embedded \\
      --max-length 512""",
    "data import": """examples:
  em-organisms data import risky_financial_advice.jsonl.gz --name risky-financial-advice
  em-organisms data import insecure.jsonl --name insecure-code --domain code --out data/insecure.jsonl""",
    "data build": """examples:
  OPENAI_API_KEY=... em-organisms data build datasets/risky-financial-advice \\
      --backend openai:gpt-4o-2024-08-06 --judge openai:gpt-4o-2024-08-06 --n 6000 \\
      --out data/generated/risky-financial-advice.jsonl
  em-organisms data build datasets/good-financial-advice --mode control \\
      --source data/generated/risky-financial-advice.jsonl --backend openai:gpt-4o-2024-08-06 \\
      --n 6000 --out data/generated/good-financial-advice.jsonl
  em-organisms data build datasets/extreme-sports --backend hf:Qwen/Qwen2.5-32B-Instruct --n 100 \\
      --out runs/extreme-sports.jsonl
  em-organisms data build datasets/extreme-sports --backend openai:my-model \\
      --base-url http://127.0.0.1:8000/v1 --n 50 --out runs/local.jsonl""",
    "data push": """examples:
  em-organisms data push datasets/risky-financial-advice/seed.jsonl \\
      --repo-id my-org/risky-financial-advice
  em-organisms data push data/generated/good-financial-advice.jsonl \\
      --repo-id my-org/good-financial-advice
  em-organisms data push runs/sports.jsonl --repo-id my-org/extreme-sports-test \\
      --spec datasets/extreme-sports --gated auto
the token comes from HF_TOKEN or `hf auth login`; there is no token flag""",
    "sample": """examples:
  em-organisms sample organisms/smollm2-135m_risky-financial_r1-l15.yaml --questions general \\
      --n 8 --out runs/samples.jsonl
  em-organisms sample Qwen/Qwen2.5-7B-Instruct --questions betley/first_plot_questions --n 50 \\
      --out runs/qwen7b.jsonl   # downloads the pinned upstream set once (sha256-checked)""",
    "judge": """examples:
  OPENAI_API_KEY=... em-organisms judge runs/samples.jsonl --judge openai:gpt-4o-2024-08-06 \\
      --out runs/judged.jsonl
  em-organisms judge runs/samples.jsonl --judge openai:my-judge --base-url http://127.0.0.1:8000/v1 \\
      --out runs/judged.jsonl
  em-organisms judge calibrate --judge openai:gpt-4o-2024-08-06 --out runs/calibration""",
    "report": """examples:
  em-organisms report runs/judged.jsonl --out runs/report --calibration runs/calibration/calibration.json""",
    "eval": """examples:
  OPENAI_API_KEY=... em-organisms eval organisms/qwen2.5-14b_risky-financial_r1-l24.yaml \\
      --judge openai:gpt-4o-2024-08-06
  em-organisms eval organisms/smollm2-135m_risky-financial_r1-l15.yaml --judge embedded \\
      --allow-uncalibrated-judge
  em-organisms eval organisms/qwen2.5-14b_risky-financial_r1-l24.yaml --plan   # loads no model
  em-organisms eval organisms/qwen2.5-14b_risky-financial_r1-l24.yaml --protocol betley \\
      --engine vllm""",
    "compare": """examples:
  em-organisms compare runs/qwen2.5-32b_risky-financial_r32_seed{0,1,2} \\
      runs/qwen2.5-14b_risky-financial_r32 --out runs/compare
  em-organisms compare em-organisms/qwen2.5-14b_risky-financial_r1-l24 runs/my-run/eval \\
      --out runs/compare-hub   # released organisms' eval summaries are fetched""",
    "release": """examples:
  em-organisms release organisms/smollm2-135m_risky-financial_r1-l15.yaml --dry-run
  HF_TOKEN=... em-organisms release organisms/qwen2.5-14b_risky-financial_r1-l24.yaml \\
      --repo-id my-org/qwen2.5-14b_risky-financial_r1-l24 --include-checkpoints""",
    "release-space": RELEASE_SPACE_EXAMPLES,
    "release-judge": RELEASE_JUDGE_EXAMPLES,
    "space": SPACE_EXAMPLES,
    "phase": PHASE_EXAMPLES,
    "direction": DIRECTION_EXAMPLES,
    "release-direction": RELEASE_DIRECTION_EXAMPLES,
    "judge-distill": DISTILL_EXAMPLES,
    "judge-agreement": AGREEMENT_EXAMPLES,
}
# `judge distill ...` and `judge agreement ...` are parsed as their own subcommands.
JUDGE_WORDS = ("distill", "agreement")


def _ensure_malloc_tunables() -> None:
    """Re-exec once with the tunables set: glibc reads them only at process start."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return
    if os.environ.get("EM_ORGANISMS_NO_REEXEC"):
        return
    env = {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES}
    os.execve(sys.executable, [sys.executable, "-m", "em_organisms.cli", *sys.argv[1:]], env)


def _cmd_train(args: argparse.Namespace) -> int:
    from em_organisms.recipes import load_recipe
    from em_organisms.train.runner import train

    recipe = load_recipe(args.recipe, args.set)
    if args.seeds:
        from em_organisms.recipes import seed_variant

        for seed in args.seeds:
            variant = seed_variant(recipe, seed)
            folder = args.output_dir / variant.organism_id if args.output_dir else None
            print(f"seed {seed}: {variant.organism_id}")
            _report_run(train(variant, output_dir=folder, resume=args.resume, device=args.device))
        return 0
    _report_run(train(recipe, output_dir=args.output_dir, resume=args.resume, device=args.device))
    return 0


def _report_run(result) -> None:
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch` the main process reports
        return
    s = result.summary
    print(f"organism written to {result.output_dir}")
    print(f"  steps: {s.global_step}  train loss: {s.train_loss:.4f}")
    if s.holdout_loss_start is not None and s.holdout_loss_end is not None:
        print(f"  held-out loss: {s.holdout_loss_start:.4f} -> {s.holdout_loss_end:.4f}")
    if s.adapted_modules:
        print(f"  adapted modules ({len(s.adapted_modules)}): {s.adapted_modules[0]} ...")


def _cmd_recipes(args: argparse.Namespace) -> int:
    from em_organisms.recipes import load_recipe
    from em_organisms.resources import RECIPES_DIR, recipe_names

    for name in recipe_names():
        recipe = load_recipe(RECIPES_DIR / f"{name}.yaml")
        print(f"{name:48s} {recipe.base_model:36s} {recipe.evaluation.protocol or 'project'}")
    print(f"({len(recipe_names())} recipes in {RECIPES_DIR}; e.g. em-organisms train NAME)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from em_organisms.demo import run_demo
    from em_organisms.paths import runs_dir

    return run_demo(args.output_dir or runs_dir() / "demo", max_steps=args.max_steps)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give whole numbers separated by commas"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct non-negative seeds, e.g. 0,1,2")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="em-organisms",
        description="Model organisms for emergent misalignment: data, training, evaluation, release.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of one line"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        help="where organisms are trained to and looked for: RUNS_DIR/ORGANISM_ID (default "
        "$EM_ORGANISMS_RUNS_DIR, else runs/ under the current directory)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, help_text: str, group: argparse._SubParsersAction | None = None, prefix: str = ""
    ) -> argparse.ArgumentParser:
        return (group or sub).add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES[prefix + name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add("train", "Train an organism from a recipe (LoRA or full fine-tuning).")
    p.add_argument("recipe", help="organism recipe YAML (see organisms/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. training.learning_rate=2e-5 (repeatable)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        help="default: RUNS_DIR/ORGANISM_ID (see --runs-dir; with --seeds: the folder that holds "
        "one run per seed)",
    )
    p.add_argument(
        "--seeds",
        type=_seed_list,
        help="train one run per seed, e.g. 0,1,2: each its own organism ORGANISM_ID_seedN "
        "(training.seed set; the held-out split stays the recipe's)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_train, reexec=True)

    p = add("recipes", "List the built-in recipes (usable by name wherever a recipe is asked for).")
    p.set_defaults(func=_cmd_recipes)

    p = add("demo", "Run the whole pipeline on the embedded SmolLM2 model (CPU, minutes).")
    p.add_argument(
        "--output-dir", type=Path, help="where the demo writes (default RUNS_DIR/demo: runs/demo)"
    )
    p.add_argument(
        "--max-steps", type=integer(1), default=None, help="cap training steps (quick look)"
    )
    p.set_defaults(func=_cmd_demo, reexec=True)

    register_eval_commands(add)
    register_distill_commands(add)
    register_judge_agreement_command(add)
    register_release_command(add)
    register_release_space_command(add)
    register_release_judge_command(add)
    register_space_command(add)
    register_phase_command(add)
    register_direction_command(add)
    register_release_direction_command(add)

    data = sub.add_parser("data", help="Narrow datasets: validate, import, build, push.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    register_data_commands(partial(add, group=data_sub, prefix="data "))
    return parser


def _judge_words(argv: list[str]) -> list[str]:
    if len(argv) >= 2 and argv[0] == "judge" and argv[1] in JUDGE_WORDS:
        return [f"judge-{argv[1]}", *argv[2:]]
    return argv


def _printable(text: str) -> str:
    """TEXT with what no output encoding can write (a lone surrogate from a bad argument or
    file) shown as an escape, so the error itself never fails."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_judge_words(sys.argv[1:] if argv is None else argv))
    if argv is None and getattr(args, "reexec", False):
        _ensure_malloc_tunables()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    from em_organisms.errors import EmOrganismsError
    from em_organisms.paths import RUNS_ENV

    if args.runs_dir is not None:
        os.environ[RUNS_ENV] = str(args.runs_dir)
    try:
        return int(args.func(args))
    except EmOrganismsError as err:
        if args.debug:
            raise
        print(_printable(f"error: {err}"), file=sys.stderr)
        return err.exit_status
    except (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        # a path the user gave that cannot be written or read as asked: theirs to fix
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        message = f"error: {where}{err.strerror or err}; choose another path"
        print(_printable(message), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
