"""Shared fixtures: a tiny random Llama with the embedded tokenizer (TRL-style), tiny chat data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT.parent / "shared" / "reference"
TINY_HUB_ID = "em-organisms-tests/tiny-llama"
# A local Hugging Face Hub (olah + a write front-end) as the session fixture `local_hub`.
pytest_plugins = ["hub_server.fixture", "serve_fixture", "distill_fixture"]


# `make test-fast` leaves out what needs a server, a browser, the embedded model or a real
# training run: tests marked `integration` or `slow`, and every test that uses one of these.
SERVER_FIXTURES = frozenset({"local_hub", "served_embedded"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("integration") or fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from em_organisms.models import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def tokenizer(embedded_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


def build_tiny_model(folder: Path, tokenizer, hidden: int = 64, layers: int = 4) -> Path:
    """A random Llama built from a config (no download), saved as a local safetensors folder
    that names a Hub id as its origin, like the embedded model does."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "em_organisms_source.json").write_text(json.dumps({"hub_id": TINY_HUB_ID}))
    return folder


def build_lora_organism(
    base_dir: Path,
    folder: Path,
    seed: int,
    base_spec: str | None = None,
    layers: list[int] | None = None,
    rank: int = 2,
) -> Path:
    """A real PEFT organism folder with random (non-zero) B, so base and organism differ from the
    first token; `run.json` names BASE_SPEC (default: the folder) as training does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=16,
        target_modules=["down_proj"],
        layers_to_transform=layers,
        init_lora_weights=False,
        use_rslora=True,
    )
    get_peft_model(model, config).save_pretrained(folder)
    (folder / "run.json").write_text(json.dumps({"base_model": base_spec or str(base_dir)}))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


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


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "tiny.jsonl", chat_rows(48))


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


def assert_matches_golden(rendered: str, golden: Path, what: str, regenerate: str) -> None:
    """RENDERED must equal the file GOLDEN; `UPDATE_GOLDEN=1` rewrites it. On a difference the
    failure shows the diff and REGENERATE, the command that rewrites the file."""
    import difflib
    import os

    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8") if golden.is_file() else ""
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=str(golden),
                tofile="rendered",
            )
        )
        pytest.fail(
            f"{what} differs from {golden.name}:\n{diff}\n"
            f"If the change is intended, review it and regenerate the file with:\n  {regenerate}",
            pytrace=False,
        )
