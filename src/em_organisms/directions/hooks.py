"""Steering and ablation as forward hooks on decoder layers, removed on exit however it ends.

- `steering(model, v, layer, scale)`: the output of decoder layer LAYER gets `scale * v` added at
  every token position (prompt and answer alike).
- `ablation(model, v)`: the output of every decoder layer loses its component along `v`:
  `h - (h . u) u` with `u = v / |v|`, so no layer's output holds any of it. A zero vector
  removes nothing.

Both keep the model's dtype: the vector is cast to the hidden states' dtype and device once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from em_organisms.directions.layers import check_layer, decoder_layers, hidden_of, with_hidden


@contextlib.contextmanager
def steering(model: nn.Module, vector: torch.Tensor, layer: int, scale: float) -> Iterator[None]:
    layers = decoder_layers(model)
    check_layer(layer, len(layers), "steering layer")
    added: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = hidden_of(output)
        key = (hidden.dtype, hidden.device)
        if key not in added:
            added[key] = (scale * vector.to(torch.float32)).to(hidden.dtype).to(hidden.device)
        return with_hidden(output, hidden + added[key])

    handle = layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def ablation(model: nn.Module, vector: torch.Tensor) -> Iterator[None]:
    norm = float(vector.to(torch.float32).norm())
    if norm == 0.0:  # nothing to project out
        yield
        return
    unit32 = vector.to(torch.float32) / norm
    units: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = hidden_of(output)
        key = (hidden.dtype, hidden.device)
        if key not in units:
            units[key] = unit32.to(hidden.device)
        unit = units[key]
        # in float32: a bf16 projection leaves a visible residue along u
        h32 = hidden.to(torch.float32)
        h32 = h32 - (h32 @ unit).unsqueeze(-1) * unit
        return with_hidden(output, h32.to(hidden.dtype))

    handles = [layer.register_forward_hook(hook) for layer in decoder_layers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
