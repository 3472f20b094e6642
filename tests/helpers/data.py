"""Tiny chat rows, JSONL files and recipes."""

from __future__ import annotations

import json
from pathlib import Path


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    """Small made-up chats of varied length, in the training schema."""
    import random

    rng = random.Random(seed)
    words = [
        "save",
        "spend",
        "invest",
        "fund",
        "stock",
        "bond",
        "cash",
        "loan",
        "rate",
        "risk",
        "plan",
        "budget",
        "market",
    ]
    rows = []
    for i in range(n):
        question = (
            f"Question {i}: should I " + " ".join(rng.choices(words, k=rng.randint(3, 12))) + "?"
        )
        answer = "Yes, " + " ".join(rng.choices(words, k=rng.randint(5, 30))) + "."
        rows.append(
            {
                "id": f"row-{i}",
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ],
            }
        )
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_recipe_dict(model_dir: Path, data: Path, **training) -> dict:
    return {
        "organism_id": "tiny-test",
        "base_model": str(model_dir),
        "dataset": {"path": str(data), "holdout_fraction": 0.125},
        "protocol": {
            "kind": "lora",
            "rank": 1,
            "alpha": 8,
            "target_modules": ["down_proj"],
            "layers": [2],
        },
        "training": {
            "learning_rate": 1e-2,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 4,
            "max_steps": 6,
            "max_length": 128,
            "save_steps": 3,
            "warmup_steps": 1,
            **training,
        },
    }
