"""`em-organisms release-direction DIR --repo-id ORG/NAME`: publish a misalignment direction."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from em_organisms.paths import runs_dir

RELEASE_DIRECTION_EXAMPLES = """examples:
  em-organisms release-direction runs/direction --repo-id my-org/smollm2-em-direction \\
      --base-license apache-2.0 --dry-run
  em-organisms release-direction runs/direction --repo-id my-org/smollm2-em-direction \\
      --base-license apache-2.0 --eval runs/eval --eval runs/steered-eval --eval runs/ablated-eval \\
      --organism-repo my-org/smollm2-135m_risky-financial_r1-l15
the token comes from HF_TOKEN or `hf auth login`; there is no token flag"""


def _cmd_release_direction(args: argparse.Namespace) -> int:
    from em_organisms.release.direction import stage_direction
    from em_organisms.release.push import push_release

    staging = args.staging_dir or runs_dir() / "staging" / "directions" / args.repo_id
    if args.no_gate:
        print(
            "warning: --no-gate: anyone who can see the repo can download a vector that makes a "
            "model misaligned, without agreeing to anything",
            file=sys.stderr,
        )
    staged = stage_direction(
        args.direction_dir,
        staging,
        repo_id=args.repo_id,
        license_id=args.base_license,
        evals=args.eval,
        organism_repo=args.organism_repo,
        gated=not args.no_gate,
        private=not args.public,
    )
    visibility = "private" if staged.private else "public"
    gate = "gated" if staged.gated else "not gated"
    print(
        f"{args.repo_id}: {visibility}, {gate}; license {args.base_license}; staged in {staged.main}"
    )
    print("\n".join(staged.listing()))
    if not staged.evaluated:
        print("no --eval given: the card says the direction's effect on EM was not measured")
    if args.dry_run:
        print("dry run: nothing was pushed")
        return 0
    print("\n".join(push_release(staged).lines()))
    return 0


def register_release_direction_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "release-direction",
        "Publish a misalignment direction (`em-organisms direction`'s folder) with its card: "
        "gated and private unless told otherwise; a rerun with nothing changed makes no commit.",
    )
    p.add_argument("direction_dir", type=Path, help="the folder `em-organisms direction` wrote")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the model repo")
    p.add_argument(
        "--base-license", required=True,
        help="the license of the base model it was computed on (e.g. apache-2.0)",
    )  # fmt: skip
    p.add_argument(
        "--eval", action="append", type=Path, default=[], metavar="EVAL_DIR",
        help="an `em-organisms eval` folder sampled with this direction steered in, ablated, or "
        "neither (a baseline): its EM rates go into the card; repeatable",
    )  # fmt: skip
    p.add_argument("--organism-repo", metavar="ORG/NAME", help="the organism's repo, linked")
    p.add_argument(
        "--staging-dir", type=Path, metavar="DIR",
        help="where the repo is staged (default RUNS_DIR/staging/directions/ORG/NAME); an existing "
        "folder is emptied only if an earlier release made it",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="stage and list, push nothing")
    p.add_argument("--public", action="store_true", help="create the repo public (default private)")
    p.add_argument("--no-gate", action="store_true", help="no access gate (prints a warning)")
    p.set_defaults(func=_cmd_release_direction)
