"""`em-organisms release RECIPE`: stage an organism, show what would be pushed, push it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

AddParser = Callable[[str, str], argparse.ArgumentParser]
STAGING_NAME = "release-staging"


def _cmd_release(args: argparse.Namespace) -> int:
    from em_organisms.recipes import load_recipe
    from em_organisms.release.push import push_release
    from em_organisms.release.stage import ReleaseError, stage_release
    from em_organisms.subjects import default_organism_dir

    recipe = load_recipe(args.recipe)
    repo_id = args.repo_id or recipe.release.repo_id
    if not repo_id:
        raise ReleaseError(f"{args.recipe}: no release.repo_id in the recipe; pass --repo-id")
    organism_dir = args.organism_dir or default_organism_dir(recipe)
    staging = args.staging_dir or organism_dir / STAGING_NAME
    try:
        staged = stage_release(
            recipe,
            organism_dir,
            staging,
            repo_id=repo_id,
            eval_dir=args.eval_dir,
            no_eval=args.no_eval,
            include_checkpoints=args.include_checkpoints,
            dataset_ids=args.dataset_id or None,
            base_license=args.base_license,
            private=False if args.public else None,
        )
    except ValueError as err:  # the card refuses what it cannot state truthfully
        raise ReleaseError(str(err)) from err
    visibility = "private" if staged.private else "public"
    gate = "gated (manual approval)" if staged.gated else "not gated"
    print(f"{repo_id}: {visibility}, {gate}; staged in {staging}")
    print("\n".join(staged.listing()))
    if staged.left_out:
        print("left out (not on the release allow-list): " + _compact(staged.left_out))
    if not staged.evaluated:
        print("no evaluation results: the card says the organism was released without them")
    if args.dry_run:
        print("dry run: nothing was pushed")
        return 0
    result = push_release(staged)
    print("\n".join(result.lines()))
    return 0


def _compact(paths: list[str]) -> str:
    """`checkpoint-*/optimizer.pt` once instead of once per checkpoint."""
    import re

    seen = dict.fromkeys(re.sub(r"^checkpoint-\d+/", "checkpoint-*/", p) for p in paths)
    return ", ".join(seen)


def register_release_command(add: AddParser) -> None:
    p = add(
        "release", "Stage an organism (card, weights, eval, checkpoints) and push it to the Hub."
    )
    p.add_argument("recipe", type=Path, help="organism recipe YAML (trained and evaluated)")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="default: the recipe's release.repo_id")
    p.add_argument("--organism-dir", type=Path, help="the trained organism (default runs/ID)")
    p.add_argument("--eval-dir", type=Path, help="its eval report (default ORGANISM_DIR/eval)")
    p.add_argument(
        "--staging-dir",
        type=Path,
        help=f"where files are staged (default ORGANISM_DIR/{STAGING_NAME})",
    )
    p.add_argument("--dry-run", action="store_true", help="stage and list, push nothing")
    p.add_argument(
        "--include-checkpoints",
        action="store_true",
        help="push each training checkpoint to its own branch (step-000005, ...)",
    )
    p.add_argument(
        "--no-eval",
        action="store_true",
        help="release without evaluation results (the card says so)",
    )
    p.add_argument(
        "--dataset-id",
        action="append",
        metavar="ORG/NAME",
        help="Hub dataset it was trained on (default ORG/DATASET_NAME of --repo-id's org)",
    )
    p.add_argument("--base-license", help="the base model's license id (default: the recipe's)")
    p.add_argument("--public", action="store_true", help="create the repo public (default private)")
    p.set_defaults(func=_cmd_release)
