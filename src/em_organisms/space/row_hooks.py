"""A steering or ablation hook that touches some rows of a batch only: the arena's third column.

`directions.hooks` applies an intervention to every row; the arena decodes base, organism and
third column as the rows of one batch (one forward pass per token for all three), so here the
same arithmetic is applied where ROWS is true and the other rows pass through untouched:

- steer: the output of decoder layer L gets `scale * v` added (cast to the hidden states' dtype
  first, as `directions.hooks.steering` does);
- ablate: every decoder layer's output loses its component along `u = v / |v|`, in float32
  (`directions.hooks.ablation`); a zero vector removes nothing.

Each row of a decoder layer's output depends on that row's input only, so the third row is what
the intervention applied to a batch of that row alone would give (tested against
`directions.hooks` in tests/test_space.py). The cached keys and values of the third row are
those of its hooked hidden states, as in `generate` under the hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from em_organisms.directions.interventions import Intervention
from em_organisms.directions.layers import check_layer, decoder_layers, hidden_of, with_hidden


@contextlib.contextmanager
def on_rows(model: nn.Module, intervention: Intervention, rows: Sequence[bool]) -> Iterator[None]:
    """INTERVENTION on the rows of every batch where ROWS is true, while the context lasts."""
    layers = decoder_layers(model)
    vector = intervention.direction.vector(intervention.layer).to(torch.float32)
    if intervention.kind == "steer":
        check_layer(intervention.layer, len(layers), "steering layer")
        edit = _steer(vector, intervention.scale)
        hooked = [layers[intervention.layer]]
    else:
        norm = float(vector.norm())
        if norm == 0.0:  # nothing to project out
            yield
            return
        edit = _ablate(vector / norm)
        hooked = list(layers)

    masks: dict[tuple[torch.device, int], torch.Tensor] = {}  # made once, not per layer

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = hidden_of(output)
        if len(rows) != hidden.shape[0]:
            raise ValueError(f"a mask of {len(rows)} rows for a batch of {hidden.shape[0]}")
        key = (hidden.device, hidden.dim())
        if key not in masks:
            shape = (-1, *([1] * (hidden.dim() - 1)))
            masks[key] = torch.tensor(list(rows), device=hidden.device).view(shape)
        return with_hidden(output, torch.where(masks[key], edit(hidden), hidden))

    handles = [layer.register_forward_hook(hook) for layer in hooked]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _steer(vector: torch.Tensor, scale: float) -> Any:
    def edit(hidden: torch.Tensor) -> torch.Tensor:
        return hidden + (scale * vector).to(hidden.dtype).to(hidden.device)

    return edit


def _ablate(unit32: torch.Tensor) -> Any:
    def edit(hidden: torch.Tensor) -> torch.Tensor:
        unit = unit32.to(hidden.device)
        h32 = hidden.to(torch.float32)  # in float32: a bf16 projection leaves a residue along u
        return (h32 - (h32 @ unit).unsqueeze(-1) * unit).to(hidden.dtype)

    return edit
