from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.data import chat_rows, tiny_recipe_dict, write_jsonl
from helpers.models import TINY_HUB_ID
from safetensors.torch import load_file

from em_organisms.adapters import load_organism
from em_organisms.data.schema import DatasetError
from em_organisms.recipes import RecipeError, parse_recipe
from em_organisms.train.runner import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    data = write_jsonl(tmp / "data.jsonl", chat_rows(48))
    recipe = parse_recipe(tiny_recipe_dict(tiny_model_dir, data))
    return train(recipe, output_dir=tmp / "out", device="cpu").output_dir


def test_adapter_holds_exactly_one_rank1_module(trained: Path) -> None:
    tensors = load_file(trained / "adapter_model.safetensors")
    assert sorted(tensors) == [
        "base_model.model.model.layers.2.mlp.down_proj.lora_A.weight",
        "base_model.model.model.layers.2.mlp.down_proj.lora_B.weight",
    ]
    assert tensors["base_model.model.model.layers.2.mlp.down_proj.lora_A.weight"].shape == (1, 128)
    assert tensors["base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"].shape == (64, 1)
    assert tensors["base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"].abs().sum() > 0
    config = json.loads((trained / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == TINY_HUB_ID  # a Hub id, never a local path
    assert (config["r"], config["use_rslora"], config["layers_to_transform"]) == (1, True, [2])


def test_output_folder_contents(trained: Path) -> None:
    for name in (
        "recipe.yaml",
        "training_log.jsonl",
        "tokenizer.json",
        "generation_config.json",
        "train_summary.json",
    ):
        assert (trained / name).is_file(), name
    assert not (trained / "README.md").exists()  # no placeholder card
    assert not (trained / "training_args.bin").exists()
    assert sorted(p.name for p in trained.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    checkpoint_config = json.loads((trained / "checkpoint-3" / "adapter_config.json").read_text())
    assert checkpoint_config["base_model_name_or_path"] == TINY_HUB_ID
    rows = [json.loads(line) for line in (trained / "training_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    for row in (r for r in rows if "loss" in r):
        assert row["grad_norm"] >= 0 and row["learning_rate"] >= 0
        assert 0 < row["assistant_tokens"] < row["tokens"]
    assert rows[-1]["tokens_seen"] == sum(r["tokens"] for r in rows if "loss" in r)
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["holdout_loss_end"] < summary["holdout_loss_start"]
    assert summary["adapted_modules"] == ["base_model.model.model.layers.2.mlp.down_proj"]
    generation = json.loads((trained / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2  # <|im_end|>


def test_base_weights_untouched_and_scale_dial(trained: Path, tiny_model_dir: Path) -> None:
    organism = load_organism(str(trained), device="cpu")
    original = load_file(tiny_model_dir / "model.safetensors")
    base_state = organism.model.get_base_model().state_dict()
    for name, tensor in original.items():
        assert torch.equal(
            base_state[name.replace(".weight", ".base_layer.weight")]
            if name not in base_state
            else base_state[name],
            tensor,
        ), name
    ids = torch.tensor([[1, 400, 500, 600, 700]])

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return organism.model(input_ids=ids).logits

    trained_logits = logits()
    with organism.base():
        base_logits = logits()
    with organism.scaled(0.0):
        zero_logits = logits()
    with organism.scaled(5.0):
        x5_logits = logits()
    assert torch.allclose(zero_logits, base_logits, atol=1e-6)
    assert not torch.allclose(trained_logits, base_logits, atol=1e-4)
    assert (x5_logits - base_logits).abs().max() > (trained_logits - base_logits).abs().max()
    assert organism.current_scale() == 1.0
    assert torch.allclose(logits(), trained_logits)


def _recipe(tiny_model_dir: Path, data: Path, **changes) -> dict:
    recipe = tiny_recipe_dict(tiny_model_dir, data)
    for section, values in changes.items():
        recipe[section].update(values)
    return recipe


def test_rows_without_assistant_turn_fail_with_file_and_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows = chat_rows(10)
    rows[3]["messages"] = rows[3]["messages"][:1]
    rows[7]["messages"][1]["role"] = "robot"
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError) as err:
        train(
            parse_recipe(_recipe(tiny_model_dir, data)), output_dir=tmp_path / "out", device="cpu"
        )
    message = str(err.value)
    assert f"{data}:4: no final assistant turn" in message
    assert f"{data}:8: messages[1]: unknown role 'robot'" in message
    assert not (tmp_path / "out").exists()  # failed before anything was written


def test_dataset_empty_after_holdout(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "one.jsonl", chat_rows(1))
    recipe = _recipe(tiny_model_dir, data, dataset={"holdout_fraction": 0.9})
    with pytest.raises(DatasetError, match="no training data after a 90% holdout"):
        train(parse_recipe(recipe), output_dir=tmp_path / "out", device="cpu")


def test_layer_out_of_range_says_how_many_layers(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    recipe = _recipe(tiny_model_dir, tiny_dataset, protocol={"layers": [4]})
    with pytest.raises(RecipeError, match=r"has 4 layers \(valid indices 0..3\)"):
        train(parse_recipe(recipe), output_dir=tmp_path / "out", device="cpu")


def test_missing_target_module_lists_available(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    recipe = _recipe(tiny_model_dir, tiny_dataset, protocol={"target_modules": ["c_fc"]})
    with pytest.raises(
        RecipeError, match=r"\['c_fc'\] not found in the model; it has: down_proj, gate_proj"
    ):
        train(parse_recipe(recipe), output_dir=tmp_path / "out", device="cpu")


def test_existing_run_is_never_overwritten(
    trained: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    recipe = parse_recipe(tiny_recipe_dict(tiny_model_dir, tiny_dataset))
    with pytest.raises(RecipeError, match="already holds a run; pass --resume"):
        train(recipe, output_dir=trained, device="cpu")


def test_resume_without_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    recipe = parse_recipe(tiny_recipe_dict(tiny_model_dir, tiny_dataset))
    with pytest.raises(RecipeError, match="no complete checkpoint"):
        train(recipe, output_dir=tmp_path / "nothing", resume=True, device="cpu")


def test_full_protocol_trains_every_weight(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    recipe = tiny_recipe_dict(tiny_model_dir, tiny_dataset)
    recipe["protocol"] = {"kind": "full"}
    recipe["training"].update(max_steps=2, save_steps=0, learning_rate=1e-3)
    out = train(parse_recipe(recipe), output_dir=tmp_path / "full", device="cpu").output_dir
    tuned = load_file(out / "model.safetensors")
    original = load_file(tiny_model_dir / "model.safetensors")
    assert not torch.equal(
        tuned["model.layers.0.self_attn.q_proj.weight"],
        original["model.layers.0.self_attn.q_proj.weight"],
    )
    assert not (out / "adapter_model.safetensors").exists()
