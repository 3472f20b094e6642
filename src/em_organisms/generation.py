"""Batched chat generation with every sampling parameter stated explicitly.

transformers' `generate` silently applies the generation config's defaults (top_k=50 among them);
we pass each parameter ourselves so a recorded answer says exactly how it was sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off (transformers would otherwise default to 50)
    max_new_tokens: int = 600
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def conversation_ids(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[dict[str, str]]]
) -> dict[str, torch.Tensor]:
    """Left-padded chat prompts (whole message lists) with the generation prompt appended."""
    texts = [
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)


@torch.inference_mode()
def generate_chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[dict[str, str]]],
    params: SamplingParams,
) -> list[Generated]:
    batch = conversation_ids(tokenizer, conversations).to(model.device)
    config = model.generation_config
    eos = config.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    kwargs: dict[str, object] = {
        "max_new_tokens": params.max_new_tokens,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    if params.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(
            do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k
        )
        torch.manual_seed(params.seed)
    output = model.generate(**batch, **kwargs)
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    stops = set(eos if isinstance(eos, list) else [eos])
    results = []
    for prompt_mask, ids in zip(batch["attention_mask"], new_tokens.tolist(), strict=True):
        ended = next((i for i, t in enumerate(ids) if t in stops), None)
        results.append(
            Generated(
                text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                prompt_tokens=int(prompt_mask.sum()),
                completion_tokens=len(ids) if ended is None else ended + 1,
                finish_reason="length" if ended is None else "stop",
            )
        )
    return results


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: SamplingParams,
    system: str | None = None,
) -> list[str]:
    head = [{"role": "system", "content": system}] if system else []
    conversations = [[*head, {"role": "user", "content": p}] for p in prompts]
    return [g.text for g in generate_chat(model, tokenizer, conversations, params)]
