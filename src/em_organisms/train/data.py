"""Turn a recipe's dataset into tokenized train and holdout sets with assistant-only labels."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from datasets import Dataset
from em_organisms.chat_masking import tokenize_chat
from em_organisms.data.schema import DatasetError, Problem, load_chat_jsonl, validate_row
from em_organisms.recipes import DatasetSpec


@dataclass
class PreparedData:
    train: Dataset
    holdout: Dataset | None
    source: str
    num_rows: int
    num_truncated: int

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.num_rows,
            "train_rows": len(self.train),
            "holdout_rows": len(self.holdout) if self.holdout is not None else 0,
            "truncated_rows": self.num_truncated,
            "train_tokens": int(sum(self.train["length"])),
        }


def read_rows(spec: DatasetSpec, base_dir: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows from a local JSONL or a Hub dataset. A relative path is looked for under the current
    directory, then under BASE_DIR, then among the package's own files (the built-in recipes'
    `datasets/NAME/seed.jsonl`)."""
    from em_organisms.resources import RESOURCES

    candidates = [Path(spec.path)]
    if not Path(spec.path).is_absolute():
        candidates += [d / spec.path for d in (base_dir, RESOURCES) if d is not None]
    for path in candidates:
        if path.is_file():
            # named as the recipe names it: a package's or checkout's absolute path is this
            # machine's, and it must not reach a summary that is published
            return load_chat_jsonl(path), str(path) if path == candidates[0] else spec.path
    if spec.path.endswith((".jsonl", ".json", ".jsonl.gz")) or spec.path.startswith((".", "/")):
        tried = ", ".join(str(c) for c in candidates)
        raise DatasetError([Problem(spec.path, 0, f"dataset file not found (tried {tried})")])
    from datasets import load_dataset

    try:
        hub = load_dataset(spec.path, split=spec.split)
    except Exception as err:  # offline, unknown, gated or private: datasets raises many kinds
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        why = str(err).split("\n")[0][:300]
        raise DatasetError(
            [Problem(spec.path, 0, f"not a local file, and not loadable from the Hub{offline}: "
                     f"{type(err).__name__}: {why}")]
        ) from None  # fmt: skip
    rows = [dict(r) for r in hub]
    problems = [
        Problem(f"{spec.path}[{spec.split}]", i + 1, msg)
        for i, row in enumerate(rows)
        for msg in validate_row({k: v for k, v in row.items() if v is not None})
    ]
    if problems:
        raise DatasetError(problems)
    return rows, f"{spec.path}[{spec.split}]"


def split_holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of row indices: (train, holdout), each in original file order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = round(n * fraction)
    return sorted(order[held:]), sorted(order[:held])


def prepare_data(
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    base_dir: Path | None = None,
    chat_template: str | None = None,
) -> PreparedData:
    rows, source = read_rows(spec, base_dir)
    train_idx, holdout_idx = split_holdout(len(rows), spec.holdout_fraction, spec.holdout_seed)
    if not train_idx:
        raise DatasetError(
            [
                Problem(
                    source,
                    0,
                    f"{len(rows)} row(s) leave no training data after a "
                    f"{spec.holdout_fraction:.0%} holdout; add rows or lower dataset.holdout_fraction",
                )
            ]
        )
    truncated = 0

    def build(indices: list[int]) -> Dataset:
        nonlocal truncated
        columns: dict[str, list[Any]] = {"input_ids": [], "labels": [], "length": [], "row": []}
        for i in indices:
            chat = tokenize_chat(tokenizer, rows[i]["messages"], max_length, chat_template)
            if chat.num_assistant_tokens == 0:
                raise DatasetError(
                    [
                        Problem(
                            source, i + 1, f"no assistant token left within max_length={max_length}"
                        )
                    ]
                )
            truncated += chat.truncated
            columns["input_ids"].append(chat.input_ids)
            columns["labels"].append(chat.labels)
            columns["length"].append(len(chat.input_ids))
            columns["row"].append(i)
        return Dataset.from_dict(columns)

    train = build(train_idx)
    holdout = build(holdout_idx) if holdout_idx else None
    return PreparedData(train, holdout, source, len(rows), truncated)
