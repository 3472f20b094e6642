"""Tiny random models and organisms built from configs (no download)."""

from __future__ import annotations

import json
from pathlib import Path

TINY_HUB_ID = "em-organisms-tests/tiny-llama"


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
    write_run_info(folder, base_spec or str(base_dir))
    return folder


def write_run_info(folder: Path, base_spec: str) -> None:
    """The `run.json` training writes, naming BASE_SPEC (data counts made up: no training ran)."""
    from em_organisms.artifacts import OrganismRun, RunInfo
    from em_organisms.artifacts.schemas import DataInfo

    data = DataInfo(
        source="none", rows=0, train_rows=0, holdout_rows=0, truncated_rows=0, train_tokens=0
    )
    info = RunInfo(
        organism_id=folder.name,
        recipe_sha256="0" * 64,
        em_organisms_version="test",
        base_model=base_spec,
        base_model_hub_id=None,
        data=data,
    )
    OrganismRun(folder).write(info)
