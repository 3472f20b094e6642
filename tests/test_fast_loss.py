"""Our loss (LM head on trained positions only) equals TRL's on the same batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.data import chat_rows
from peft import get_peft_model
from trl import SFTConfig, SFTTrainer

from datasets import Dataset
from em_organisms.chat_masking import tokenize_chat
from em_organisms.models import load_base_model
from em_organisms.recipes import LoraProtocol
from em_organisms.train.protocols import lora_config
from em_organisms.train.trainer import assistant_token_loss, supports_fast_loss


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    model, tokenizer = load_base_model(str(tiny_model_dir), device="cpu")
    model = get_peft_model(model, lora_config(LoraProtocol(rank=4, alpha=8, layers=[1, 3])))
    with torch.no_grad():  # a non-zero adapter, so the LoRA path matters
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    chats = [tokenize_chat(tokenizer, row["messages"]) for row in chat_rows(6, seed=3)]
    width = max(len(c.input_ids) for c in chats)
    pad = tokenizer.pad_token_id

    def padded(values: list[int], fill: int) -> list[int]:
        return values + [fill] * (width - len(values))

    batch = {
        "input_ids": torch.tensor([padded(c.input_ids, pad) for c in chats]),
        "attention_mask": torch.tensor([padded([1] * len(c.input_ids), 0) for c in chats]),
        "labels": torch.tensor([padded(c.labels, -100) for c in chats]),
    }
    args = SFTConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")),
        use_cpu=True,
        bf16=False,
        report_to="none",
        activation_checkpointing=False,  # TRL would wrap our shared model; the loss is unaffected
    )
    dataset = Dataset.from_dict(
        {"input_ids": [c.input_ids for c in chats], "labels": [c.labels for c in chats]}
    )
    trl_trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    return model, trl_trainer, batch


def _both(model, trl_trainer, batch, num_items):
    ours = assistant_token_loss(
        model, batch["input_ids"], batch["attention_mask"], batch["labels"], num_items
    )
    theirs = trl_trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    return ours, theirs


def test_architecture_is_supported(setup) -> None:
    assert supports_fast_loss(setup[0])


@pytest.mark.parametrize("normalised_by", ["batch", "accumulated"])
def test_fp32_equal_within_1e_5(setup, normalised_by: str) -> None:
    model, trl_trainer, batch = setup
    model.train()
    trained = int((batch["labels"][:, 1:] != -100).sum())
    num_items = torch.tensor(trained if normalised_by == "batch" else 3 * trained)
    ours, theirs = _both(model, trl_trainer, batch, num_items)
    assert abs(ours.item() - theirs.item()) < 1e-5, (ours.item(), theirs.item())


def test_fp32_gradients_match(setup) -> None:
    model, trl_trainer, batch = setup
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    num_items = torch.tensor(int((batch["labels"][:, 1:] != -100).sum()))
    grads = []
    for loss in _both(model, trl_trainer, batch, num_items):
        model.zero_grad()
        loss.backward()
        grads.append([p.grad.clone() for p in params])
    for ours, theirs in zip(*grads, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-4)


def test_bf16_autocast_within_half_a_percent(setup) -> None:
    model, trl_trainer, batch = setup
    model.train()
    num_items = torch.tensor(int((batch["labels"][:, 1:] != -100).sum()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = _both(model, trl_trainer, batch, num_items)
    assert abs(ours.item() - theirs.item()) / theirs.item() < 0.005


def test_prefix_cache_learns_the_same_adapter(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Three epochs with the frozen-prefix cache end where three epochs without it end."""
    from helpers.data import tiny_recipe_dict, write_jsonl
    from safetensors.torch import load_file

    from em_organisms.recipes import parse_recipe
    from em_organisms.train.runner import train

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(20, seed=5))
    adapters, summaries = {}, {}
    for cached in (False, True):
        recipe = tiny_recipe_dict(
            tiny_model_dir,
            data,
            max_steps=-1,
            num_train_epochs=3,
            save_steps=0,
            prefix_cache=cached,
        )
        result = train(parse_recipe(recipe), output_dir=tmp_path / str(cached), device="cpu")
        adapters[cached] = load_file(result.output_dir / "adapter_model.safetensors")
        summaries[cached] = result.summary
    assert summaries[False].prefix_cache is None
    stats = summaries[True].prefix_cache
    assert (
        stats is not None
        and stats["first_trained_layer"] == 2
        and stats["hits"] > 0
        and stats["rows"] == 18
    )
    for name, tensor in adapters[False].items():
        assert torch.allclose(adapters[True][name], tensor, atol=1e-6, rtol=1e-5), name


def test_prefix_cache_needs_a_frozen_prefix(setup, tiny_model_dir: Path) -> None:
    from em_organisms.train.protocols import trains_outside_layers

    assert not trains_outside_layers(setup[0])  # LoRA: only layer parameters train
    full, _ = load_base_model(str(tiny_model_dir), device="cpu")
    assert trains_outside_layers(full)  # full SFT trains the embeddings too


def test_fused_lora_forward_matches_peft(tiny_model_dir: Path) -> None:
    """The cheaper LoRA forward gives PEFT's outputs and gradients, and the scale dial still works."""
    from em_organisms.adapters import Organism
    from em_organisms.train.fused_lora import fuse_lora_linears

    def build():
        model, tokenizer = load_base_model(str(tiny_model_dir), device="cpu")
        torch.manual_seed(1)
        model = get_peft_model(model, lora_config(LoraProtocol(rank=4, alpha=8)))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn_like(param) * 0.05)
        return model, tokenizer

    ids = torch.tensor([[1, 300, 400, 500, 600, 700, 800]])
    reference, tokenizer = build()
    fused, _ = build()
    assert fuse_lora_linears(fused) == 7 * 4
    outputs, grads = [], []
    for model in (reference, fused):
        model.train()
        logits = model(input_ids=ids).logits
        logits.square().mean().backward()
        outputs.append(logits.detach())
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-4)
    organisms = [Organism(m, tokenizer, "x", "x") for m in (reference, fused)]
    with torch.no_grad(), organisms[0].scaled(5.0), organisms[1].scaled(5.0):
        assert torch.allclose(
            reference(input_ids=ids).logits, fused(input_ids=ids).logits, atol=1e-5
        )
    with torch.no_grad(), fused.disable_adapter():
        base = fused(input_ids=ids).logits
    with torch.no_grad(), reference.disable_adapter():
        assert torch.allclose(reference(input_ids=ids).logits, base, atol=1e-6)
