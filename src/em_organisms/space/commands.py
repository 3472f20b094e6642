"""`em-organisms space` and `python spaces/arena/app.py`: the same flags, the same arena.

Organisms come from `--organism` (repeatable), else from the config file's list, else the
project's default recipe (its trained run). Every organism is resolved before the page starts,
so a typo or an untrained recipe fails here, with all problems listed, not in a user's browser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from em_organisms.argtypes import integer, number
from em_organisms.space.config import MAX_STEER_SCALE, ArenaConfig, load_config

if TYPE_CHECKING:
    pass

SPACE_EXAMPLES = """examples:
  em-organisms space
  em-organisms space --organism runs/demo/smollm2-135m_risky-financial_r1-l15 --port 7861
  em-organisms space --organism em-organisms/qwen2.5-14b_risky-financial_r1-l24 \\
      --organism em-organisms/qwen2.5-14b_bad-medical_r1-l24 --host 0.0.0.0
  OPENAI_API_KEY=... em-organisms space --judge-calibration runs/calibration/calibration.json
  python spaces/arena/app.py --organism runs/demo/smollm2-135m_risky-financial_r1-l15
  em-organisms space --organism runs/demo/smollm2-135m_risky-financial_r1-l15 \\
      --direction runs/direction --steer-scale 4
without an API key the judge is SmolLM2-135M scoring with its own distribution: uncalibrated"""


def add_space_arguments(p: argparse.ArgumentParser, default_config: Path | None = None) -> None:
    p.add_argument(
        "--organism",
        action="append",
        default=[],
        metavar="SPEC",
        help="recipe YAML, organism folder or Hub id of a LoRA organism (repeatable; default: the "
        "config's list, else the project's default recipe)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=default_config,
        help="arena YAML (organisms, judge, limits)"
        + (f"; default {default_config.name} beside the app" if default_config else ""),
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=integer(1, 65535), help="port (default 7860)")
    p.add_argument(
        "--judge",
        help="auto, distilled[:PATH_OR_HUB_ID], openai:MODEL, hf:PATH_OR_ID or embedded (default auto)",
    )
    p.add_argument(
        "--protocol",
        help="evaluation protocol for the judge prompts and sampling: paper, betley, project "
        "(default) or a YAML path",
    )
    p.add_argument(
        "--judge-prompts",
        metavar="SPEC",
        help="question-file, project, a registry name or a YAML path (default: the protocol's)",
    )
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint for an openai: judge")
    p.add_argument("--judge-calibration", help="calibration.json of this judge")
    p.add_argument(
        "--allow-any-repo",
        action="store_const",
        const=True,
        help="let users load any Hub LoRA organism on an offered base model",
    )
    p.add_argument(
        "--direction",
        metavar="DIR_OR_HUB_ID",
        help="a misalignment direction (`em-organisms direction`'s folder or file, or a released "
        "one's Hub id): adds a third column, the base steered or the organism with it ablated",
    )
    p.add_argument(
        "--direction-layer",
        type=integer(0),
        metavar="LAYER",
        help="the layer steered at and ablated (default: the direction's default layer)",
    )
    p.add_argument(
        "--steer-scale",
        type=number(-MAX_STEER_SCALE, MAX_STEER_SCALE),
        metavar="SCALE",
        help=f"times the direction added when steering (default 1; at most {MAX_STEER_SCALE:g} "
        "either way)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def arena_config(args: argparse.Namespace) -> ArenaConfig:
    # app.py always names arena.yaml beside it; a folder without one runs on the defaults.
    default = args.config is not None and args.config == getattr(args, "default_config", None)
    use_file = args.config is not None and (args.config.is_file() or not default)
    config = load_config(args.config) if use_file else ArenaConfig()
    config = config.with_overrides(
        organisms=args.organism or None,
        judge=args.judge,
        protocol=args.protocol,
        judge_prompts=args.judge_prompts,
        judge_base_url=args.judge_base_url,
        judge_calibration=args.judge_calibration,
        allow_any_repo=args.allow_any_repo,
        direction=args.direction,
        direction_layer=args.direction_layer,
        steer_scale=args.steer_scale,
    )
    if not config.organisms:
        from em_organisms.resources import DEFAULT_RECIPE

        config = config.with_overrides(organisms=[str(DEFAULT_RECIPE)])
    return config


def run_space(args: argparse.Namespace) -> int:
    from em_organisms.space.app import build_app, launch
    from em_organisms.space.arena import build_arena

    arena = build_arena(arena_config(args), device=args.device)
    launch(build_app(arena), host=args.host, port=args.port)
    return 0


def register_space_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("space", "Launch the arena: base model vs organism side by side, with a judge.")
    add_space_arguments(p)
    p.set_defaults(func=run_space)


def main(argv: list[str] | None = None, default_config: Path | None = None) -> int:
    """The Space's entry point (`spaces/arena/app.py`): `em-organisms space` with its flags."""
    import logging
    import sys

    parser = argparse.ArgumentParser(
        prog="app.py",
        description="The EM organisms arena (same flags as `em-organisms space`).",
        epilog=SPACE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_space_arguments(parser, default_config)
    parser.set_defaults(default_config=default_config)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from em_organisms.errors import EmOrganismsError

    try:
        return run_space(args)
    except EmOrganismsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_status
