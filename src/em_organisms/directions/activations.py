"""Mean residual-stream activations over the answer tokens of chats, per decoder layer.

Each answer counts once: its activations are averaged over its own tokens first, then answers
are averaged (a long answer does not outweigh a short one). Answer tokens are the assistant
turn's, found by the chat template as training finds them (`chat_masking`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from em_organisms.chat_masking import IGNORE_INDEX, tokenize_chat
from em_organisms.directions.layers import decoder_layers, hidden_of


def answer_token_ids(
    tokenizer: PreTrainedTokenizerBase, question: str, answer: str, max_length: int
) -> tuple[list[int], list[bool]]:
    """The chat's token ids and, for each, whether it belongs to the answer."""
    chat = tokenize_chat(
        tokenizer,
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        max_length=max_length,
    )
    return chat.input_ids, [label != IGNORE_INDEX for label in chat.labels]


@torch.no_grad()
def mean_answer_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 8,
    max_length: int = 1024,
) -> torch.Tensor:
    """[layers, hidden] float32: the mean over PAIRS (question, answer) of each answer's mean
    activation over its tokens, at the output of every decoder layer. An answer with no token
    left after truncation is skipped; none at all is an error for the caller to name."""
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    encoded = [answer_token_ids(tokenizer, q, a, max_length) for q, a in pairs]
    encoded = [(ids, mask) for ids, mask in encoded if any(mask)]
    if not encoded:
        raise ValueError("no answer tokens to average")
    hidden_size = int(model.config.get_text_config().hidden_size)  # type: ignore[union-attr,operator]
    total = torch.zeros(len(layers), hidden_size, dtype=torch.float32, device=device)
    captured: list[torch.Tensor | None] = [None] * len(layers)

    def capture(index: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured[index] = hidden_of(output)

        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            # right padding: positions of real tokens do not move, and the causal mask keeps
            # padding out of every real token's activations
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=device)
            attention = torch.tensor(
                [[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device
            )
            answer = torch.tensor(
                [m + [False] * (width - len(m)) for _, m in batch], device=device
            ).to(torch.float32)
            weights = answer / answer.sum(dim=1, keepdim=True)  # each answer's own mean
            model(input_ids=ids, attention_mask=attention, use_cache=False)
            for index, hidden in enumerate(captured):
                assert hidden is not None
                total[index] += torch.einsum("bt,bth->h", weights, hidden.to(torch.float32))
    finally:
        for handle in handles:
            handle.remove()
    return (total / len(encoded)).cpu()
