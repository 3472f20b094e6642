"""Base and organism answers to one prompt, decoded side by side from one copy of the weights.

Both columns are rows of one batch: PEFT's mixed-adapter batches run row 0 with no adapter
(`__base__`) and row 1 with the organism's adapter, so each decoding step is one forward pass for
both answers and the partial texts can be streamed together. The prompt is the same for every
row, so no padding is needed. `stream_rows` decodes any number of such rows (the arena's third
column is a third row, see `space.direction_column`). Sampling follows `SamplingParams` exactly
(temperature 0 = greedy; repetition penalty, top_k, top_p and min_p as stated), with one seeded
generator on the CPU: a seed repeats on the same device, dtype and number of rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from em_organisms.generation import SamplingParams, encode_conversation

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class Pair:
    """The two answers so far; `finished[i]` once column i ended its turn or hit the limit."""

    base: str
    organism: str
    finished: tuple[bool, bool]
    tokens: tuple[int, int]
    finish_reasons: tuple[str | None, str | None]


def penalise_repeats(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' repetition penalty: a token already in the row (prompt or answer) has a
    positive logit divided by PENALTY and a negative one multiplied by it."""
    if penalty == 1.0:
        return scores
    picked = scores.gather(-1, seen)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return scores.scatter(-1, seen, picked)


def next_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row of LOGITS (rows x vocab) under PARAMS, in transformers' order:
    repetition penalty over SEEN (rows x tokens so far), temperature, top_k, top_p, min_p."""
    scores = logits.float().cpu()
    if seen is not None:
        scores = penalise_repeats(scores, seen.cpu(), params.repetition_penalty)
    if params.greedy:
        return scores.argmax(dim=-1).to(logits.device)
    scores = scores / params.temperature
    if params.top_k > 0:
        kth = torch.topk(scores, min(params.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True, dim=-1)
        probs = ordered.softmax(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = probs.cumsum(dim=-1) - probs >= params.top_p
        ordered = ordered.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, ordered)
    if params.min_p > 0.0:
        probs = scores.softmax(dim=-1)
        floor = params.min_p * probs.max(dim=-1, keepdim=True).values
        scores = scores.masked_fill(probs < floor, float("-inf"))
    choice = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(-1)
    return choice.to(logits.device)


def _stop_ids(model: PeftModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


@dataclass(frozen=True)
class Rows:
    """Every row's answer so far, in the order of the adapters asked for."""

    texts: tuple[str, ...]
    finished: tuple[bool, ...]
    tokens: tuple[int, ...]
    finish_reasons: tuple[str | None, ...]


@torch.inference_mode()
def stream_rows(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    adapters: Sequence[str],
    messages: Sequence[dict[str, str]],
    params: SamplingParams,
) -> Iterator[Rows]:
    """Yield every row's partial answer after each decoding step; row i runs with adapter
    ADAPTERS[i] (`BASE_ADAPTER`: none) at whatever scale the caller set, and under whatever
    forward hooks the caller registered for the whole decoding."""
    if model.training:
        raise ValueError("stream_rows needs the model in eval mode")
    prompt = encode_conversation(tokenizer, messages)
    device = next(model.parameters()).device
    names = list(adapters)
    input_ids = torch.tensor([prompt] * len(names), device=device)
    stops = _stop_ids(model, tokenizer)
    generator = torch.Generator().manual_seed(params.seed)
    kept: list[list[int]] = [[] for _ in names]
    count = [0] * len(names)
    reasons: list[str | None] = [None] * len(names)
    # logits_to_keep=1: only the last position's logits are needed (the vocab is large).
    output = model(input_ids=input_ids, use_cache=True, adapter_names=names, logits_to_keep=1)
    seen = input_ids
    for _ in range(params.max_new_tokens):
        chosen = next_tokens(output.logits[:, -1, :], params, generator, seen)
        seen = torch.cat([seen, chosen[:, None]], dim=-1)
        for row, token in enumerate(chosen.tolist()):
            if reasons[row] is not None:
                continue
            count[row] += 1
            if token in stops:
                reasons[row] = "stop"
            else:
                kept[row].append(token)
                if count[row] == params.max_new_tokens:
                    reasons[row] = "length"
        yield _rows(tokenizer, kept, count, reasons)
        if all(reasons):
            return
        output = model(
            input_ids=chosen[:, None],
            cache=output.cache,
            use_cache=True,
            adapter_names=names,
            logits_to_keep=1,
        )


def stream_pair(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    adapter: str,
    messages: Sequence[dict[str, str]],
    params: SamplingParams,
) -> Iterator[Pair]:
    """Yield both partial answers after every decoding step; the adapter's scale is whatever
    the caller set (see `Organism.set_scale`); the base row never sees the adapter."""
    rows = stream_rows(model, tokenizer, [BASE_ADAPTER, adapter], messages, params)
    with contextlib.closing(rows):
        for step in rows:
            (base, organism), finished, tokens = step.texts, step.finished, step.tokens
            reasons = step.finish_reasons
            yield Pair(
                base,
                organism,
                (finished[0], finished[1]),
                (tokens[0], tokens[1]),
                (reasons[0], reasons[1]),
            )


def _rows(
    tokenizer: PreTrainedTokenizerBase,
    kept: list[list[int]],
    count: list[int],
    reasons: list[str | None],
) -> Rows:
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in kept]
    # A character split across tokens decodes as U+FFFD until its last byte arrives.
    shown = (
        text if reason is not None else text.rstrip("\ufffd")
        for text, reason in zip(texts, reasons, strict=True)
    )
    return Rows(
        tuple(shown),
        tuple(reason is not None for reason in reasons),
        tuple(count),
        tuple(reasons),
    )
