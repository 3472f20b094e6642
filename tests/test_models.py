from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from em_organisms.models import ModelLoadError, load_base_model, resolve_model


def test_tiny_model_loads_from_local_folder(tiny_model_dir: Path) -> None:
    model, tokenizer = load_base_model(str(tiny_model_dir), device="cpu")
    assert model.config.num_hidden_layers == 4
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.pad_token is not None
    assert resolve_model(str(tiny_model_dir)).hub_id == "em-organisms-tests/tiny-llama"


def test_embedded_model_is_a_30_layer_llama(embedded_dir: Path) -> None:
    config = json.loads((embedded_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert (embedded_dir / "model.safetensors").is_file()
    assert resolve_model("embedded").hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    generation = json.loads((embedded_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2  # <|im_end|>: organisms stop at the end of their turn


def test_missing_model_names_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not-a-model"):
        resolve_model("./not-a-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"could not read a model config from .*empty"):
        load_base_model(str(empty), device="cpu")


def test_corrupt_weights_are_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_model_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_base_model(str(broken), device="cpu")


def test_pickle_only_checkpoint_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_bytes((tiny_model_dir / name).read_bytes())
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_base_model(str(pickled), device="cpu")


def test_non_causal_model_is_refused(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "vit"
    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="'vit' model, not a causal language model"):
        load_base_model(str(folder), device="cpu")


def test_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = resolve_model("em-organisms-tests/does-not-exist")
    assert not source.is_local and source.hub_id == "em-organisms-tests/does-not-exist"
    with pytest.raises(ModelLoadError, match="em-organisms-tests/does-not-exist"):
        load_base_model("em-organisms-tests/does-not-exist", device="cpu")


def test_public_api_is_reexported() -> None:
    import em_organisms

    for name in ("load_recipe", "load_organism", "load_base_model", "Organism", "Recipe"):
        assert hasattr(em_organisms, name)
