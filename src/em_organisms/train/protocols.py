"""The training protocols: LoRA (rank-1 single layer up to rank-32 everywhere) and full fine-tuning.

TRL has no `layers_to_transform`, so we build the PEFT config ourselves and check it against the
model before any training starts.
"""

from __future__ import annotations

import re

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from em_organisms.models import num_layers
from em_organisms.recipes import FullProtocol, LoraProtocol, RecipeError

_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


def linear_module_names(model: PreTrainedModel) -> list[str]:
    """Leaf names of the Linear modules inside decoder layers (what LoRA can target)."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _LAYER_RE.search(name + ".")
    }
    return sorted(names)


def check_lora_protocol(model: PreTrainedModel, protocol: LoraProtocol) -> None:
    layers = num_layers(model)
    if protocol.layers is not None:
        bad = [layer for layer in protocol.layers if layer >= layers]
        if bad:
            raise RecipeError(
                f"protocol.layers {bad} out of range: {model.config.model_type} has {layers} "
                f"layers (valid indices 0..{layers - 1})"
            )
    available = linear_module_names(model)
    missing = [m for m in protocol.target_modules if m not in available]
    if missing:
        raise RecipeError(
            f"protocol.target_modules {missing} not found in the model; it has: {', '.join(available)}"
        )


def lora_config(protocol: LoraProtocol) -> LoraConfig:
    return LoraConfig(
        r=protocol.rank,
        lora_alpha=protocol.alpha,
        use_rslora=protocol.rslora,
        lora_dropout=protocol.dropout,
        target_modules=list(protocol.target_modules),
        layers_to_transform=list(protocol.layers) if protocol.layers is not None else None,
        layers_pattern="layers" if protocol.layers is not None else None,
        bias=protocol.bias,
        task_type="CAUSAL_LM",
    )


def apply_protocol(
    model: PreTrainedModel, protocol: LoraProtocol | FullProtocol
) -> PreTrainedModel | PeftModel:
    """Wrap the model for training: a PEFT model for LoRA, the model itself for full SFT."""
    if isinstance(protocol, FullProtocol):
        model.requires_grad_(True)
        return model
    check_lora_protocol(model, protocol)
    peft_model = get_peft_model(model, lora_config(protocol))
    return peft_model


def adapted_module_names(model: PeftModel) -> list[str]:
    return sorted(
        name.removesuffix(".lora_A.default")
        for name, _ in model.named_modules()
        if name.endswith(".lora_A.default")
    )


def lowest_adapted_layer(model: PreTrainedModel | PeftModel) -> int | None:
    """Index of the lowest decoder layer that has trainable parameters (None if none found)."""
    layers = [
        int(m.group(1))
        for name, p in model.named_parameters()
        if p.requires_grad and (m := _LAYER_RE.search(name))
    ]
    return min(layers) if layers else None


def trains_outside_layers(model: PreTrainedModel | PeftModel) -> bool:
    """Whether any trainable parameter lives outside the decoder layers (embeddings, head...)."""
    return any(
        p.requires_grad and not _LAYER_RE.search(name) for name, p in model.named_parameters()
    )
