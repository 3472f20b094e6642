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


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]
) -> list[int]:
    """Token ids of a chat prompt with the generation prompt appended (BOS from the template)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def left_pad(id_lists: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids in id_lists)
    input_ids = torch.full((len(id_lists), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(id_lists), width), dtype=torch.long)
    for row, ids in enumerate(id_lists):
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)


@torch.inference_mode()
def generate_from_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
) -> list[Generated]:
    """Generate one answer per (already encoded) prompt, in one left-padded batch."""
    config = model.generation_config
    eos = config.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    batch = {k: v.to(model.device) for k, v in left_pad(prompts, pad).items()}
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
    for prompt, ids in zip(prompts, new_tokens.tolist(), strict=True):
        ended = next((i for i, t in enumerate(ids) if t in stops), None)
        kept = ids if ended is None else ids[:ended]
        results.append(
            Generated(
                text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
                prompt_tokens=len(prompt),
                completion_tokens=len(ids) if ended is None else ended + 1,
                finish_reason="length" if ended is None else "stop",
            )
        )
    return results


def generate_chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[dict[str, str]]],
    params: SamplingParams,
) -> list[Generated]:
    prompts = [encode_conversation(tokenizer, messages) for messages in conversations]
    return generate_from_ids(model, tokenizer, prompts, params)


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
