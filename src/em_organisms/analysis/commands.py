"""`em-organisms phase RUN_DIR --out DIR`: the phase-transition analysis and behavioural sweep."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from em_organisms import defaults
from em_organisms.argtypes import integer, number
from em_organisms.eval.commands import add_fail_share_flag, add_pairs_flag

PHASE_EXAMPLES = """examples:
  em-organisms phase runs/demo/smollm2-135m_risky-financial_r1-l15 --out runs/demo/phase \\
      --judge distilled --samples 2 --max-new-tokens 48
  OPENAI_API_KEY=... em-organisms phase runs/qwen2.5-14b_risky-financial_r1-l24_phase \\
      --out runs/phase-financial --protocol paper --sweep-count 8
  em-organisms phase em-organisms/qwen2.5-14b_risky-financial_r1-l24_phase --out runs/phase-hub \\
      --no-sweep      # from the released organism's step-NNNNNN branches
RUN_DIR is a training run (its adapter_trajectory/ recording, else its checkpoint-N folders) or
the Hub id of an organism released with --include-checkpoints"""


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: scales are 0 or more")
    return values


def _cmd_phase(args: argparse.Namespace) -> int:
    from em_organisms.analysis.phase import SweepOptions, run_phase

    sweep = None
    if not args.no_sweep:
        changes = {
            "question_sets": args.questions,
            "samples_per_question": args.samples,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "judge_prompts": args.judge_prompts,
        }
        sweep = SweepOptions(
            judge=args.judge,
            judge_base_url=args.base_url,
            steps=args.sweep_step,
            count=args.sweep_count,
            scales=args.scales,
            protocol=args.protocol,
            changes={k: v for k, v in changes.items() if v is not None},
            calibration_pairs=args.pairs,
            fail_share=args.fail_share,
        )
    result = run_phase(
        args.run, args.out, ks=args.k or None, threshold=args.threshold, sweep=sweep,
        device=args.device, magnitude_cut=args.magnitude_cut,
    )  # fmt: skip
    step = result["rotation_step"]
    print(
        f"maximum rotation: {'step ' + str(step) if step is not None else 'none found'}; "
        f"gradient-norm peak: step {result['grad_norm_peak_step']}"
    )
    print(f"written: {Path(args.out) / 'phase.json'}, {Path(args.out) / 'summary.md'}, plots")
    return 0


def register_phase_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "phase", "Phase-transition analysis: when the adapter turns, and when behaviour follows."
    )
    p.add_argument("run", help="training run folder, or Hub id of a released organism")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--k", type=integer(1), action="append", default=[], metavar="STEPS",
        help="local-cosine offset in training steps (repeatable; default 5, 10 and 15 as in the "
        "paper), mapped onto whole recording intervals",
    )  # fmt: skip
    p.add_argument(
        "--threshold",
        type=number(-1, 1),
        default=defaults.PHASE_THRESHOLD,
        help="local cosine (the paper's convention: -1 on a straight path) above which, at "
        "every k, a peak counts as a turn (default -0.5)",
    )
    p.add_argument(
        "--magnitude-cut",
        type=number(0),
        help="count a step only where its larger displacement norm exceeds this (default: the "
        "paper's, 0.0035 for Qwen and 0.002 for Llama and Gemma; none for other models)",
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the behavioural sweep")
    p.add_argument(
        "--judge",
        help="judge of the sweep: openai:MODEL, hf:PATH_OR_ID, embedded, distilled[:PATH_OR_ID] "
        "(default: the protocol's, openai:gpt-4o-2024-08-06)",
    )
    p.add_argument(
        "--protocol",
        help="evaluation protocol of the sweep: paper, betley, project (default) or a YAML path; "
        "--samples, --max-new-tokens, --temperature, --questions and --judge-prompts change it, "
        "recorded",
    )
    p.add_argument(
        "--judge-prompts",
        metavar="SPEC",
        help="question-file, project, a registry name or a YAML path (default: the protocol's)",
    )
    p.add_argument("--base-url", help="OpenAI-compatible endpoint for an openai: judge")
    add_fail_share_flag(p, "the sweep stops", "one cell's judge scores")
    p.add_argument(
        "--sweep-step", type=integer(0), action="append", default=[], metavar="STEP",
        help="a checkpoint step to sweep (repeatable; default: --sweep-count spread evenly)",
    )  # fmt: skip
    p.add_argument(
        "--sweep-count",
        type=integer(1),
        help="checkpoints to sweep, spread evenly (default: every checkpoint, as the paper)",
    )
    p.add_argument(
        "--scales",
        type=_floats,
        default=defaults.PHASE_SCALES,
        help="adapter scales, e.g. 1,5,10,20",
    )
    p.add_argument(
        "--questions", action="append", default=None, metavar="QSET",
        help="question set: project set, registry name or YAML path (repeatable; default: the "
        "protocol's)",
    )  # fmt: skip
    p.add_argument(
        "--samples", type=integer(1), help="samples per question (default: the protocol's)"
    )
    p.add_argument("--max-new-tokens", type=integer(1), help="default: the protocol's (600)")
    p.add_argument("--temperature", type=number(0), help="default: the protocol's (1.0)")
    add_pairs_flag(p, "judge calibration: labelled pairs per domain")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_phase)
