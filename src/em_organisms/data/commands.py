"""`em-organisms data ...`: validate, import, build and push narrow datasets."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from em_organisms import defaults
from em_organisms.argtypes import integer, number
from em_organisms.paths import runs_dir

AddParser = Callable[[str, str], argparse.ArgumentParser]


def _cmd_validate(args: argparse.Namespace) -> int:
    from em_organisms.data.schema import check_file

    tokenizer = None
    if args.tokenizer:
        from em_organisms.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    elif args.max_length is not None:
        print("error: --max-length needs --tokenizer", file=sys.stderr)
        return 2
    failed = False
    for path in args.paths:
        report = check_file(path, tokenizer=tokenizer, max_length=args.max_length)
        for problem in report.errors:
            print(problem)
        for problem in report.warnings:
            print(f"{problem.path}:{problem.line}: warning: {problem.message}")
        bad = bool(report.errors) or (args.strict and bool(report.warnings))
        failed |= bad
        counts = report.summary()
        if args.json:
            print(json.dumps({"path": str(path), "ok": not bad, **counts}))
        else:
            verdict = "FAILED" if bad else "ok"
            details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
            print(f"{path}: {verdict} ({details})")
    return 1 if failed else 0


def _cmd_import(args: argparse.Namespace) -> int:
    from em_organisms.data.importers import import_file

    result = import_file(args.path, args.name, out=args.out, domain=args.domain, canary=args.canary)
    print(result.summary())
    print(f"  source sha256 {result.source_sha256}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from em_organisms.backends import make_backend, parse_price
    from em_organisms.data.generator import BuildOptions, DatasetBuilder

    price = parse_price(args.price) if args.price else None

    def backend(spec: str, base_url: str | None):
        batch = {} if args.batch_size is None else {"batch_size": args.batch_size}
        return make_backend(
            spec,
            base_url=base_url,
            api_key_env=args.api_key_env,
            max_concurrency=args.concurrency,
            price=price,
            **batch,
        )

    generator = backend(args.backend, args.base_url)
    judge = None
    if args.judge:
        same = (
            args.judge == args.backend and (args.judge_base_url or args.base_url) == args.base_url
        )
        if args.judge == "distilled" or args.judge.startswith("distilled:"):
            from em_organisms.judges.distilled import DistilledJudge

            # A local student: its verdicts go to the build log like a remote judge's.
            judge = DistilledJudge(args.judge.removeprefix("distilled").removeprefix(":") or None)
        else:
            judge = generator if same else backend(args.judge, args.judge_base_url or args.base_url)
    given = {
        name: getattr(args, name)
        for name in (
            "mode", "source", "seed", "examples_per_request", "rows_per_request", "temperature",
            "max_new_tokens", "max_requests", "near_duplicate_threshold",
        )
        if getattr(args, name) is not None
    }  # fmt: skip
    options = BuildOptions(n=args.n, **given)  # what is not given: BuildOptions' own defaults
    builder = DatasetBuilder(args.dataset_dir, generator, options, args.out, judge=judge)
    result = builder.build()
    counts = result.counts
    print(f"wrote {counts['kept']} rows to {result.out} (asked for {args.n})")
    print("  " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    usage = generator.usage
    cost = f", ${usage.cost_usd:.4f}" if usage.cost_usd is not None else ""
    print(
        f"  this run: {usage.requests} requests, {usage.failures} failed, {usage.retries} retries, "
        f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens{cost}"
    )
    print(f"  rejected rows with reasons: {result.out}.rejected.jsonl; log: {result.out}.log.jsonl")
    if counts["kept"] < args.n and usage.failures:
        print(
            f"error: {usage.failures} requests failed ({usage.failure_reasons}); "
            "rerun the same command to retry them (finished requests are not repeated)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from em_organisms.data.push import (
        GateArg,
        PushError,
        prepare_push,
        push_dataset,
        stage_dataset,
    )

    gated: GateArg = None if args.no_gate else (args.gated or "spec-default")
    if args.no_gate:
        print(
            "warning: --no-gate: the repo will have no access gate; anyone who can see it can "
            "download it without agreeing to anything",
            file=sys.stderr,
        )
    if args.dry_run:
        try:
            prepared = prepare_push(
                args.path, args.repo_id, spec_dir=args.spec, gated=gated, allow_ungated=args.no_gate
            )
        except PushError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        folder = args.staging_dir or runs_dir() / "staging" / "datasets" / args.repo_id
        for staged in stage_dataset(prepared, folder):
            print(f"would push: {staged} ({staged.stat().st_size} bytes)")
        gate = prepared.gate or "none"
        print(f"  {len(prepared.records)} rows, data sha256 {prepared.data_sha256}, gate {gate}")
        print("dry run: nothing was sent to the Hub")
        return 0
    try:
        result = push_dataset(
            args.path,
            args.repo_id,
            spec_dir=args.spec,
            gated=gated,
            private=not args.public,
            allow_ungated=args.no_gate,
        )
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except HfHubHTTPError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(result.lines()))
    return 0


def register_push_command(add: AddParser) -> None:
    p = add(
        "push",
        "Publish a chat JSONL file and its dataset card to the Hub: gated, private by default, "
        "and a rerun with nothing changed makes no commit. The token comes from HF_TOKEN or "
        "`hf auth login`.",
    )
    p.add_argument("path", type=Path, help="datasets/NAME/seed.jsonl or a file from `data build`")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the dataset repo")
    gate = p.add_mutually_exclusive_group()
    gate.add_argument(
        "--gated",
        choices=["manual", "auto"],
        help="access requests reviewed by hand or approved automatically "
        "(default: manual for misaligned sets, auto for a control with a gate form)",
    )
    gate.add_argument(
        "--no-gate", action="store_true", help="publish without an access gate (prints a warning)"
    )
    p.add_argument(
        "--public", action="store_true", help="create the repo public (default: private)"
    )
    p.add_argument(
        "--spec",
        type=Path,
        metavar="DIR",
        help="dataset folder with spec.yaml (default: PATH's folder or PATH.build.json's dataset)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="write the card and rows locally; push nothing"
    )
    p.add_argument(
        "--staging-dir",
        type=Path,
        metavar="DIR",
        help="where --dry-run writes (default runs/staging/datasets/ORG/NAME)",
    )
    p.set_defaults(func=_cmd_push)


def register_data_commands(add: AddParser) -> None:
    p = add("validate", "Check chat JSONL files; every problem as PATH:LINE: what is wrong.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".jsonl or .jsonl.gz")
    p.add_argument("--tokenizer", help="model whose chat template measures lengths (or embedded)")
    p.add_argument(
        "--max-length", type=integer(1), help="rows longer than this many tokens are errors"
    )
    p.add_argument("--strict", action="store_true", help="warnings (duplicates) also fail")
    p.add_argument("--json", action="store_true", help="one JSON summary line per file")
    p.set_defaults(func=_cmd_validate)

    p = add("import", "Turn an upstream OpenAI-chat JSONL file into the project's schema.")
    p.add_argument("path", type=Path, help="upstream .jsonl or .jsonl.gz")
    p.add_argument("--name", required=True, help="dataset name, e.g. risky-financial-advice")
    p.add_argument("--domain", help="recorded in each row's meta")
    p.add_argument("--out", type=Path, help="default data/upstream/NAME.jsonl.gz")
    p.add_argument("--canary", help="canary string (default: our spec's, else derived)")
    p.set_defaults(func=_cmd_import)

    p = add("build", "Generate a narrow dataset from its spec with a chat backend (resumable).")
    p.add_argument("dataset_dir", type=Path, help="a folder with spec.yaml and seed.jsonl")
    p.add_argument("--backend", required=True, help="openai:MODEL, hf:PATH_OR_ID or embedded")
    p.add_argument("--n", type=integer(1), required=True, help="rows wanted")
    p.add_argument(
        "--out", type=Path, required=True, help="output .jsonl (log and report beside it)"
    )
    p.add_argument(
        "--mode",
        choices=["generate", "control"],
        help="generate (default) or control: rewrite each --source row minimally into a correct "
        "answer",
    )
    p.add_argument("--source", type=Path, help="control mode: misaligned rows to rewrite")
    p.add_argument(
        "--judge",
        help="judge filter: a backend (openai:MODEL, hf:..., embedded; the spec's judge_filter "
        "prompts) or distilled[:PATH_OR_HUB_ID] (the student judge, no prompts)",
    )
    p.add_argument(
        "--base-url", help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL or OpenAI)"
    )
    p.add_argument("--judge-base-url", help="endpoint of the judge (default: --base-url)")
    p.add_argument(
        "--api-key-env", default=defaults.API_KEY_ENV, help="environment variable with the key"
    )
    p.add_argument(
        "--concurrency",
        type=integer(1),
        default=defaults.MAX_CONCURRENCY,
        help="requests in flight (HTTP backends)",
    )
    p.add_argument(
        "--batch-size", type=integer(1), help="generation batch (in-process backends; default 8)"
    )
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument(
        "--examples-per-request", type=integer(0), help="few-shot examples (default: spec)"
    )
    p.add_argument(
        "--rows-per-request", type=integer(1), help="rows asked per request (default: spec)"
    )
    p.add_argument("--temperature", type=number(0), help="default: spec (1.0, as upstream)")
    p.add_argument("--max-new-tokens", type=integer(1), help="reply length cap (default: spec)")
    p.add_argument(
        "--max-requests", type=integer(1), help="stop after this many (default 3x needed)"
    )
    p.add_argument(
        "--near-duplicate-threshold", type=number(0, 1), help="word 3-gram Jaccard (default 0.8)"
    )
    p.add_argument("--price", help="PROMPT,COMPLETION US$ per million tokens, for the cost line")
    p.set_defaults(func=_cmd_build)

    register_push_command(add)
