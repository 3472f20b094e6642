"""Skip the frozen layers below the lowest adapter after the first epoch.

When every layer below the lowest adapted one is frozen and deterministic (no dropout), the
hidden states entering that layer are the same for a given row in every epoch. We keep them
from the first epoch (keyed by the row's tokens) and, from then on, run only the layers the
loss needs gradients through. For SmolLM2's rank-1 adapter on layer 15 of 30 that removes half
of each forward pass in epochs two and later. Batches are right-padded, so the padding a row
was computed with never reaches its real positions: cached and fresh values agree to float
rounding.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psutil
import torch
from torch import nn

# Architectures whose decoder layers take the hidden states first and return a tensor.
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _row_key(tokens: torch.Tensor) -> bytes:
    return hashlib.blake2b(tokens.cpu().numpy().tobytes(), digest_size=16).digest()


class PrefixCache:
    def __init__(self, layers: nn.ModuleList, first_trained_layer: int, budget_bytes: int) -> None:
        self.layers = layers
        self.first = first_trained_layer
        self.budget = budget_bytes
        self.used = 0
        self.store: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0
        self._skip = False
        self._replacement: torch.Tensor | None = None
        self._capture: list[tuple[bytes, int]] | None = None
        for layer in layers[:first_trained_layer]:
            original = layer.forward
            layer.forward = self._skippable(original)
        layers[first_trained_layer].register_forward_pre_hook(
            self._at_first_trained, with_kwargs=True
        )

    def _skippable(self, original: Any) -> Any:
        def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return hidden_states if self._skip else original(hidden_states, *args, **kwargs)

        return forward

    def _at_first_trained(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if self._replacement is not None:
            hidden = self._replacement.to(device=hidden.device, dtype=hidden.dtype)
        elif self._capture is not None:
            for index, (key, length) in enumerate(self._capture):
                row = hidden[index, :length].detach().to("cpu", copy=True)
                if self.used + row.nbytes > self.budget:
                    break
                self.store[key] = row
                self.used += row.nbytes
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def forward(
        self, backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        lengths = attention_mask.sum(dim=1).tolist()
        if any(attention_mask[i, : int(n)].min() == 0 for i, n in enumerate(lengths)):
            raise ValueError("prefix cache needs right-padded batches")
        keys = [_row_key(input_ids[i, : int(n)]) for i, n in enumerate(lengths)]
        try:
            if all(k in self.store for k in keys):
                self.hits += 1
                width = input_ids.shape[1]
                cached = [self.store[k] for k in keys]
                batch = cached[0].new_zeros((len(keys), width, cached[0].shape[-1]))
                for i, row in enumerate(cached):
                    batch[i, : row.shape[0]] = row
                self._skip, self._replacement = True, batch
            else:
                self.misses += 1
                self._capture = list(zip(keys, (int(n) for n in lengths), strict=True))
            return backbone(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
        finally:
            self._skip, self._replacement, self._capture = False, None, None

    def stats(self) -> dict[str, int]:
        return {
            "first_trained_layer": self.first,
            "rows": len(self.store),
            "bytes": self.used,
            "hits": self.hits,
            "misses": self.misses,
        }


def default_budget() -> int:
    """A quarter of the memory available now, at most 4 GiB."""
    return min(4 << 30, psutil.virtual_memory().available // 4)


def prefix_is_cacheable(model_type: str, config: Any, first_trained_layer: int | None) -> bool:
    if model_type not in SUPPORTED_MODEL_TYPES or not first_trained_layer:
        return False
    return float(getattr(config, "attention_dropout", 0.0) or 0.0) == 0.0
