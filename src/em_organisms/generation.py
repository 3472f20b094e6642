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


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], system: str | None = None
) -> dict[str, torch.Tensor]:
    """Left-padded chat prompts with the generation prompt appended."""
    texts = []
    for prompt in prompts:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        texts.append(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


@torch.inference_mode()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: SamplingParams,
    system: str | None = None,
) -> list[str]:
    batch = chat_prompt_ids(tokenizer, prompts, system).to(model.device)
    config = model.generation_config
    kwargs: dict[str, object] = {
        "max_new_tokens": params.max_new_tokens,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id
        if config.pad_token_id is not None
        else tokenizer.pad_token_id,
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
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_tokens]
