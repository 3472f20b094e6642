"""The backward shared by the chunked head losses (cross-entropy in `trainer`, KL in `kl`).

Each computes, in its forward pass and chunk by chunk, the gradient of a summed loss with respect
to its first input (the hidden states) and saves it; backward only scales that saved gradient by
the incoming one. No other input gets a gradient.
"""

from __future__ import annotations

from typing import Any

import torch


class GradientInForward(torch.autograd.Function):
    """Base of a Function whose forward saves d loss / d input 0 with `ctx.save_for_backward`;
    its other four inputs get no gradient."""

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_output.to(grad_hidden.dtype), None, None, None, None
