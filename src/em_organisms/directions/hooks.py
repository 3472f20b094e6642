"""Steering and ablation as forward hooks on decoder layers, removed on exit however it ends.

- `steering(model, v, layer, scale)`: the output of decoder layer LAYER gets `scale * v` added at
  every token position (prompt and answer alike).
- `ablation(model, v)`: the output of every decoder layer loses its component along `v`:
  `h - (h . u) u` with `u = v / |v|`, computed in float32 (a bf16 projection leaves a visible
  residue along u), so no layer's output holds any of it. A zero vector removes nothing.

With ROWS (one bool per row of every batch), only those rows are changed: the arena decodes the
base, the organism and a third column as the rows of one batch. Each row of a decoder layer's
output depends on that row's input only, so a changed row is what the hook applied to a batch of
that row alone gives. Both keep the model's dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from em_organisms.directions.layers import check_layer, decoder_layers, hidden_of, with_hidden

Edit = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def steering(
    model: nn.Module,
    vector: torch.Tensor,
    layer: int,
    scale: float,
    rows: Sequence[bool] | None = None,
) -> Iterator[None]:
    layers = decoder_layers(model)
    check_layer(layer, len(layers), "steering layer")
    added = scale * vector.to(torch.float32)

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        return hidden + added.to(hidden.dtype).to(hidden.device)

    with _hooked([layers[layer]], edit, rows):
        yield


@contextlib.contextmanager
def ablation(
    model: nn.Module, vector: torch.Tensor, rows: Sequence[bool] | None = None
) -> Iterator[None]:
    norm = float(vector.to(torch.float32).norm())
    if norm == 0.0:  # nothing to project out
        yield
        return
    unit32 = vector.to(torch.float32) / norm

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        unit = unit32.to(hidden.device)
        h32 = hidden.to(torch.float32)
        return (h32 - (h32 @ unit).unsqueeze(-1) * unit).to(hidden.dtype)

    with _hooked(list(decoder_layers(model)), edit, rows):
        yield


@contextlib.contextmanager
def _hooked(modules: list[nn.Module], edit: Edit, rows: Sequence[bool] | None) -> Iterator[None]:
    masks: dict[tuple[torch.device, int], torch.Tensor] = {}  # made once, not per layer

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = hidden_of(output)
        if rows is None:
            return with_hidden(output, edit(hidden))
        if len(rows) != hidden.shape[0]:
            raise ValueError(f"a mask of {len(rows)} rows for a batch of {hidden.shape[0]}")
        key = (hidden.device, hidden.dim())
        if key not in masks:
            shape = (-1, *([1] * (hidden.dim() - 1)))
            masks[key] = torch.tensor(list(rows), device=hidden.device).view(shape)
        return with_hidden(output, torch.where(masks[key], edit(hidden), hidden))

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
