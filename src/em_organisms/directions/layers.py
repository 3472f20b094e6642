"""The decoder layers of a causal LM, found through PEFT's wrappers, and their outputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from em_organisms.errors import EmOrganismsError


class LayerError(EmOrganismsError, ValueError):
    pass


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder layers: the ModuleList as long as the config's hidden layer count
    (`model.model.layers` on Llama, Qwen, Gemma; found by search through PEFT's wrappers)."""
    config = model.config.get_text_config()  # type: ignore[union-attr,operator]
    count = int(config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and name.endswith("layers"):
            return module
    raise LayerError(f"no list of {count} decoder layers found in {type(model).__name__}")


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden states a decoder layer returned: the tensor itself, or the first of a tuple
    (older transformers and some architectures return (hidden, attention, cache))."""
    return output if isinstance(output, torch.Tensor) else output[0]


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """OUTPUT with its hidden states replaced by HIDDEN, in the same shape of return value."""
    if isinstance(output, torch.Tensor):
        return hidden
    return (hidden, *output[1:])


def check_layer(layer: int, count: int, what: str = "layer") -> int:
    if not 0 <= layer < count:
        raise LayerError(f"{what} {layer} is out of range: this model has layers 0-{count - 1}")
    return layer
