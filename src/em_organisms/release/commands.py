"""`em-organisms release RECIPE` (stage an organism, show what would be pushed, push it) and
`em-organisms release-space` (the same for the arena Space)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from em_organisms.paths import runs_dir
from em_organisms.release import (
    DEFAULT_RECIPE,
    DEFAULT_SPACE_FOLDER,
    DEFAULT_SPACE_REPO_ID,
)

AddParser = Callable[[str, str], argparse.ArgumentParser]


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
    staging = args.staging_dir or runs_dir() / "staging" / "organisms" / repo_id
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
    p.add_argument("--organism-dir", type=Path, help="the trained organism (default RUNS_DIR/ID)")
    p.add_argument("--eval-dir", type=Path, help="its eval report (default ORGANISM_DIR/eval)")
    p.add_argument(
        "--staging-dir",
        type=Path,
        help="where files are staged (default RUNS_DIR/staging/organisms/ORG/NAME); an existing "
        "folder is emptied only if a release made it",
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


RELEASE_SPACE_EXAMPLES = """examples:
  em-organisms release-space --dry-run
  em-organisms release-space --repo-id my-org/em-arena \\
      --organism organisms/smollm2-135m_risky-financial_r1-l15.yaml \\
      --organism organisms/smollm2-135m_risky-financial_r32.yaml
  em-organisms release-space --folder my-space --repo-id my-org/em-arena --public
the token comes from HF_TOKEN or `hf auth login`; there is no token flag"""


def _cmd_release_space(args: argparse.Namespace) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from em_organisms.hub_ids import HUB_ID
    from em_organisms.recipes import RecipeError
    from em_organisms.release.space_card import SpaceError, render_space_card
    from em_organisms.release.space_push import push_space
    from em_organisms.release.space_stage import stage_space

    recipes = args.organism or [DEFAULT_RECIPE]
    staging = args.staging_dir or runs_dir() / "staging" / "spaces" / args.repo_id
    try:
        if not HUB_ID.match(args.repo_id):
            raise SpaceError(f"--repo-id {args.repo_id!r} is not a Hub id of the form org/name")
        card = render_space_card(recipes, dataset_ids=args.dataset)
        about = {"kind": "space", "repo_id": args.repo_id, "models": card.data.models}
        staged = stage_space(args.folder, staging, card, about)
    except (SpaceError, RecipeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    visibility = "public" if args.public else "private"
    print(f"staged {args.folder} in {staged.folder} for space {args.repo_id} ({visibility}):")
    for name in staged.files:
        print(f"  {name} ({(staged.folder / name).stat().st_size} bytes)")
    for name, why in staged.left_out:
        print(f"  left out: {name} ({why})")
    if args.dry_run:
        print("dry run: nothing was sent to the Hub")
        return 0
    try:
        pushed = push_space(staged, args.repo_id, private=not args.public)
    except HfHubHTTPError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(pushed.url)
    if pushed.push.commit:
        print(f"  commit {pushed.push.commit}: {len(staged.files)} files")
    else:
        print("  no change (the Space already holds exactly these files)")
    print(f"  visibility: {'private' if pushed.private else 'public'}")
    return 0


def register_release_space_command(add: AddParser) -> None:
    p = add(
        "release-space",
        "Publish the arena Space (base model vs organism chat) with its rendered card: only "
        "allow-listed files, private by default, and a rerun with nothing changed makes no "
        "commit. The token comes from HF_TOKEN or `hf auth login`.",
    )
    p.add_argument(
        "--folder",
        type=Path,
        default=DEFAULT_SPACE_FOLDER,
        help="the Space folder (default: the arena Space shipped with the package, "
        "spaces/arena in a checkout)",
    )
    p.add_argument(
        "--repo-id",
        default=DEFAULT_SPACE_REPO_ID,
        metavar="ORG/NAME",
        help=f"default {DEFAULT_SPACE_REPO_ID}",
    )
    p.add_argument(
        "--organism",
        action="append",
        metavar="RECIPE",
        help="recipe of an organism the Space shows (repeatable; default the embedded "
        f"{DEFAULT_RECIPE.stem})",
    )
    p.add_argument(
        "--dataset",
        action="append",
        metavar="ORG/NAME",
        help="a Hub dataset to list (repeatable; default each organism's, "
        "ORGANISM_ORG/DATASET_NAME)",
    )
    p.add_argument(
        "--staging-dir",
        type=Path,
        metavar="DIR",
        help="where the Space is staged (default runs/staging/spaces/ORG/NAME)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="stage and list what would be pushed; push nothing"
    )
    p.add_argument(
        "--public", action="store_true", help="create the Space public (default: private)"
    )
    p.set_defaults(func=_cmd_release_space)


RELEASE_JUDGE_EXAMPLES = """examples:
  em-organisms release-judge runs/judges/minilm-l6_gpt4o-em/student \\
      --recipe judges/minilm-l6_gpt4o-em.yaml --dry-run
  em-organisms release-judge runs/judges/minilm-l6_gpt4o-em/student \\
      --recipe judges/minilm-l6_gpt4o-em.yaml --public
  em-organisms release-judge runs/judges/my-judge/student --repo-id my-org/my-judge --license mit
the token comes from HF_TOKEN or `hf auth login`; there is no token flag"""


def _cmd_release_judge(args: argparse.Namespace) -> int:
    from em_organisms.distill.recipe import load_judge_recipe
    from em_organisms.release.judge import stage_judge
    from em_organisms.release.push import push_release
    from em_organisms.release.stage import ReleaseError

    release: dict[str, str] = {}
    recipe_sha = None
    if args.recipe:
        recipe = load_judge_recipe(args.recipe)
        release, recipe_sha = recipe.release, recipe.sha256()
    repo_id = args.repo_id or release.get("repo_id")
    license_id = args.license or release.get("license")
    where = f"{args.recipe}: no release.{{}} in the recipe" if args.recipe else "no --recipe"
    if not repo_id:
        raise ReleaseError(f"{where.format('repo_id')}; pass --repo-id")
    if not license_id:
        raise ReleaseError(f"{where.format('license')}; pass --license (e.g. apache-2.0)")
    staging = args.staging_dir or runs_dir() / "staging" / "judges" / repo_id
    staged = stage_judge(
        args.student_dir,
        staging,
        repo_id=repo_id,
        license_id=license_id,
        recipe_sha256=recipe_sha,
        private=not args.public,
        allow_local_backbone=args.allow_local_backbone,
    )
    visibility = "private" if staged.private else "public"
    print(f"{repo_id}: {visibility}, not gated; license {license_id}; staged in {staged.main}")
    print("\n".join(staged.listing()))
    if staged.left_out:
        print("left out (not on the release allow-list): " + ", ".join(staged.left_out))
    if staged.local_backbone:
        print("the student reads a local encoder: the card says so, and users must pass it")
    if args.dry_run:
        print("dry run: nothing was pushed")
        return 0
    print("\n".join(push_release(staged).lines()))
    return 0


def register_release_judge_command(add: AddParser) -> None:
    p = add(
        "release-judge",
        "Publish a distilled judge (`judge distill`'s student folder) with its rendered card: "
        "only allow-listed files, private unless --public, and a rerun with nothing changed "
        "makes no commit. The token comes from HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("student_dir", type=Path, help="the student folder (OUTPUT_DIR/student)")
    p.add_argument(
        "--recipe",
        type=Path,
        help="the judge recipe it was distilled from: its release.repo_id and release.license "
        "are the defaults",
    )
    p.add_argument("--repo-id", metavar="ORG/NAME", help="default: the recipe's release.repo_id")
    p.add_argument("--license", help="the student's license id (default: release.license)")
    p.add_argument(
        "--staging-dir",
        type=Path,
        metavar="DIR",
        help="where the repo is staged (default runs/staging/judges/ORG/NAME); an existing folder "
        "is emptied only if an earlier release-judge made it",
    )
    p.add_argument("--dry-run", action="store_true", help="stage and list, push nothing")
    p.add_argument("--public", action="store_true", help="create the repo public (default private)")
    p.add_argument(
        "--allow-local-backbone",
        action="store_true",
        help="release a student trained over a local encoder (tests, private use): it is named "
        "by sha256 only and users pass its folder",
    )
    p.set_defaults(func=_cmd_release_judge)
