"""`em-organisms data ...`: validate, import, build and push narrow datasets."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

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


def register_data_commands(add: AddParser) -> None:
    p = add("validate", "Check chat JSONL files; every problem as PATH:LINE: what is wrong.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".jsonl or .jsonl.gz")
    p.add_argument("--tokenizer", help="model whose chat template measures lengths (or embedded)")
    p.add_argument("--max-length", type=int, help="rows longer than this many tokens are errors")
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
