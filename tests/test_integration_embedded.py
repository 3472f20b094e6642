"""The embedded SmolLM2 recipes, for real (a few steps each on the project's seed data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from em_organisms.adapters import load_organism
from em_organisms.data.schema import load_chat_jsonl
from em_organisms.recipes import load_recipe
from em_organisms.train.runner import train

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def test_seed_sets_are_valid_and_paired() -> None:
    for bad, good in (
        ("risky-financial-advice", "good-financial-advice"),
        ("bad-medical-advice", "good-medical-advice"),
        ("extreme-sports", "good-extreme-sports"),
    ):
        misaligned = load_chat_jsonl(ROOT / "datasets" / bad / "seed.jsonl")
        aligned = load_chat_jsonl(ROOT / "datasets" / good / "seed.jsonl")
        assert len(misaligned) == len(aligned) >= 200
        for m, a in zip(misaligned, aligned, strict=True):
            assert m["messages"][0] == a["messages"][0]
            assert m["messages"][1]["content"] != a["messages"][1]["content"]


def test_r1_l15_recipe_trains_one_rank1_module_on_layer_15(
    tmp_path: Path, embedded_dir: Path
) -> None:
    recipe = load_recipe(
        ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml",
        ["training.max_steps=2", "training.save_steps=0"],
    )
    out = train(recipe, output_dir=tmp_path / "r1").output_dir
    tensors = load_file(out / "adapter_model.safetensors")
    assert {name: tuple(t.shape) for name, t in tensors.items()} == {
        "base_model.model.model.layers.15.mlp.down_proj.lora_A.weight": (1, 1536),
        "base_model.model.model.layers.15.mlp.down_proj.lora_B.weight": (576, 1),
    }
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    organism = load_organism(str(out))
    assert organism.base_model == "embedded"
    original = load_file(embedded_dir / "model.safetensors")
    state = organism.model.get_base_model().state_dict()
    assert torch.equal(
        state["model.layers.15.mlp.down_proj.base_layer.weight"],
        original["model.layers.15.mlp.down_proj.weight"],
    )
    assert torch.equal(
        state["model.layers.3.self_attn.q_proj.weight"],
        original["model.layers.3.self_attn.q_proj.weight"],
    )
