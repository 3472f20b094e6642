"""Shared fixtures: a tiny random Llama with the embedded tokenizer (TRL-style), tiny chat data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.data import chat_rows, write_jsonl
from helpers.models import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "tiny.jsonl", chat_rows(48))
