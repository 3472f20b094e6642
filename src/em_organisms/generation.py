"""Batched chat generation where the sampling that happens is the sampling that is recorded.

transformers' `generate` fills every parameter a caller leaves unset from the model's
`generation_config.json` and then from its own defaults: on Qwen2.5 that silently adds top_k 20
and repetition_penalty 1.05, on Llama top_k 50, on Gemma-3 top_k 64. Here every parameter that
changes the distribution is a field of `SamplingParams`, the model's generation config is set
aside while generating (only its token ids are kept), and the record of a row is the whole
`SamplingParams`. `--generation-config model` reproduces the inheritance on purpose: the
model's values are read into `SamplingParams` first (`inherit_generation_config`), so they are
recorded too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from em_organisms.errors import EmOrganismsError

GenerationConfigMode = Literal["explicit", "model"]
GENERATION_CONFIG_MODES: tuple[GenerationConfigMode, ...] = ("explicit", "model")
# transformers' own default where neither the caller nor the model's config sets top_k
TRANSFORMERS_DEFAULT_TOP_K = 50
# What a model's generation_config.json may set that changes the distribution of answers, with
# the value that leaves it unchanged. The first three are SamplingParams fields; a model config
# that sets any other one to a non-neutral value is refused in `model` mode (it would not be
# recorded).
INHERITED_NEUTRAL: dict[str, Any] = {
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
}
UNRECORDED_NEUTRAL: dict[str, Any] = {
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    "watermarking_config": None,
    "min_length": 0,
    "min_new_tokens": None,
    "num_beams": 1,
}


class SamplingError(EmOrganismsError, ValueError):
    pass


@dataclass(frozen=True)
class SamplingParams:
    """Every parameter that changes the distribution of an answer; all are applied as given.

    `generation_config` says where top_k, min_p and repetition_penalty came from: "explicit"
    (stated by the protocol, recipe or command line) or "model" (read from the model's
    generation config, as upstream code that calls `generate` without them inherits them)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    max_new_tokens: int = 600
    seed: int = 0
    generation_config: GenerationConfigMode = "explicit"

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature {self.temperature} < 0")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p {self.top_p} is not in (0, 1]")
        if self.top_k < 0:
            problems.append(f"top_k {self.top_k} < 0 (0 = off)")
        if not 0 <= self.min_p < 1:
            problems.append(f"min_p {self.min_p} is not in [0, 1) (0 = off)")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty {self.repetition_penalty} <= 0 (1 = off)")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens {self.max_new_tokens} < 1")
        if self.generation_config not in GENERATION_CONFIG_MODES:
            problems.append(
                f"generation_config {self.generation_config!r} is not one of "
                f"{', '.join(GENERATION_CONFIG_MODES)}"
            )
        if problems:
            raise SamplingError("sampling: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise SamplingError(f"sampling: unknown parameter(s) {', '.join(sorted(unknown))}")
        return cls(**data)


def inherit_generation_config(
    params: SamplingParams, config: GenerationConfig | Mapping[str, Any] | None, source: str
) -> SamplingParams:
    """PARAMS with top_k, min_p and repetition_penalty taken from a model's generation config,
    as `generate` would fill them when a caller leaves them unset (top_k falls back to
    transformers' default of 50 where the config has none). Temperature, top_p, the token
    budget and the seed stay as given: upstream evaluation code passes those itself."""
    values = config.to_dict() if isinstance(config, GenerationConfig) else dict(config or {})
    for key, neutral in UNRECORDED_NEUTRAL.items():
        value = values.get(key)
        if value is not None and value != neutral:
            raise SamplingError(
                f"{source}: generation config sets {key}={value!r}, which SamplingParams cannot "
                "record; use --generation-config explicit"
            )
    top_k = values.get("top_k")
    return replace(
        params,
        top_k=int(TRANSFORMERS_DEFAULT_TOP_K if top_k is None else top_k),
        min_p=float(values.get("min_p") or 0.0),
        repetition_penalty=float(values.get("repetition_penalty") or 1.0),
        generation_config="model",
    )


def model_generation_config(location: str) -> GenerationConfig | None:
    """The generation config stored beside a model (a folder or a Hub id), None if it has none."""
    try:
        return GenerationConfig.from_pretrained(location)
    except OSError:
        return None


def generate_kwargs(params: SamplingParams) -> dict[str, Any]:
    """What `generate` is called with: every distribution-changing parameter, stated."""
    if params.greedy:
        return {"do_sample": False, "repetition_penalty": params.repetition_penalty}
    return {
        "do_sample": True,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
    }


@contextlib.contextmanager
def model_defaults_set_aside(model: PreTrainedModel) -> Iterator[None]:
    """Run `generate` as if the model had no generation_config.json but its token ids, so
    nothing is filled in from it; transformers' remaining defaults are neutral once
    `generate_kwargs` states top_k."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = inner.generation_config
    inner.generation_config = GenerationConfig(
        bos_token_id=saved.bos_token_id,
        eos_token_id=saved.eos_token_id,
        pad_token_id=saved.pad_token_id,
    )
    try:
        yield
    finally:
        inner.generation_config = saved


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
        **generate_kwargs(params),
    }
    if not params.greedy:
        torch.manual_seed(params.seed)
    with model_defaults_set_aside(model):
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
