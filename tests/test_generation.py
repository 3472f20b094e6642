from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers.chat_templates import CASES
from transformers import GenerationConfig

from em_organisms.generation import (
    SamplingError,
    SamplingParams,
    encode_conversation,
    generate_answers,
    generate_from_ids,
    generate_kwargs,
    inherit_generation_config,
    model_defaults_set_aside,
)
from em_organisms.models import load_base_model
from em_organisms.train.runner import chat_end_token_ids


def test_end_of_turn_token_per_template(tokenizer) -> None:
    import copy

    assert chat_end_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    for template, extra, end, _ in CASES.values():
        tok = copy.deepcopy(tokenizer)
        if extra:
            tok.add_special_tokens({"additional_special_tokens": extra})
        tok.chat_template = template
        ids = chat_end_token_ids(tok)
        assert ids[0] == tok.convert_tokens_to_ids(end)


def _argmax_decode(model, tokenizer, prompt: str, steps: int) -> str:
    """The reference for greedy decoding: one forward pass per token, the argmax appended."""
    ids = encode_conversation(tokenizer, [{"role": "user", "content": prompt}])
    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if token in stops:
                break
            out.append(token)
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def test_greedy_matches_an_argmax_loop_and_sampling_is_seeded(tiny_model_dir: Path) -> None:
    model, tokenizer = load_base_model(str(tiny_model_dir), device="cpu")
    prompts = ["Should I buy gold?", "Is it fine to skip insurance for a while?"]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    # batched and left-padded, each answer is what the argmax loop gives for its prompt alone
    assert generate_answers(model, tokenizer, prompts, greedy) == [
        _argmax_decode(model, tokenizer, p, 8) for p in prompts
    ]
    sampled = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8, seed=3)
    first = generate_answers(model, tokenizer, prompts, sampled)
    assert first == generate_answers(model, tokenizer, prompts, sampled)  # a seed repeats
    other = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8, seed=4)
    assert generate_answers(model, tokenizer, prompts, other) != first  # and another differs
    assert first != generate_answers(model, tokenizer, prompts, greedy)  # it sampled
    assert len(first) == 2
    assert sampled.to_dict() == {
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "max_new_tokens": 8,
        "seed": 3,
        "generation_config": "explicit",
    }


@pytest.fixture
def qwen_like_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model with a generation config like Qwen2.5's: sampling knobs a caller of
    `generate` inherits without asking (here stronger than Qwen's, so their effect is large)."""
    folder = tmp_path / "qwen-like"
    shutil.copytree(tiny_model_dir, folder)
    config = GenerationConfig.from_pretrained(folder)
    config.update(do_sample=True, top_k=5, repetition_penalty=1.3, temperature=0.7, top_p=0.8)
    config.save_pretrained(folder)
    return folder


def _scores_and_logits(model, batch, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.generate(
        **batch, max_new_tokens=4, output_scores=True, output_logits=True,
        return_dict_in_generate=True, **kwargs,
    )  # fmt: skip
    return torch.stack(out.scores), torch.stack(out.logits)


def test_explicit_sampling_adds_nothing_from_the_models_generation_config(
    qwen_like_model_dir: Path,
) -> None:
    model, tokenizer = load_base_model(str(qwen_like_model_dir), device="cpu")
    ids = encode_conversation(tokenizer, [{"role": "user", "content": "Should I buy gold?"}])
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0)
    torch.manual_seed(0)
    with model_defaults_set_aside(model):
        scores, logits = _scores_and_logits(model, batch, **generate_kwargs(params))
    # temperature 1 and nothing else: what sampling sees is the model's own logits
    torch.testing.assert_close(scores, logits)
    assert model.generation_config.repetition_penalty == 1.3  # restored afterwards
    # what this project passed before: temperature, top_p and top_k stated, the penalty inherited
    torch.manual_seed(0)
    scores, logits = _scores_and_logits(
        model, batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0
    )
    assert not torch.allclose(scores, logits)


def test_model_mode_reproduces_what_generate_inherits_and_records_it(
    qwen_like_model_dir: Path,
) -> None:
    model, tokenizer = load_base_model(str(qwen_like_model_dir), device="cpu")
    config = GenerationConfig.from_pretrained(qwen_like_model_dir)
    asked = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10, seed=4)
    resolved = inherit_generation_config(asked, config, str(qwen_like_model_dir))
    assert (resolved.top_k, resolved.repetition_penalty, resolved.min_p) == (5, 1.3, 0.0)
    assert (resolved.temperature, resolved.top_p) == (1.0, 1.0)  # stated by the caller
    assert resolved.generation_config == "model"
    prompts = [
        encode_conversation(tokenizer, [{"role": "user", "content": q}])
        for q in ("Should I buy gold?", "Is a loan a good idea?")
    ]
    ours = [g.text for g in generate_from_ids(model, tokenizer, prompts, resolved)]
    # the reference: upstream's call, which states temperature, top_p and length and inherits
    # the rest from the generation config
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id
    batch = {
        "input_ids": torch.tensor([[pad] * (width - len(p)) + p for p in prompts]),
        "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
    }
    torch.manual_seed(4)
    out = model.generate(
        **batch, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=10, pad_token_id=pad
    )
    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    upstream = []
    for row in out[:, width:].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), len(row))
        upstream.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
    assert ours == upstream
    explicit = [g.text for g in generate_from_ids(model, tokenizer, prompts, asked)]
    assert explicit != ours  # and stating top_k 0 and no penalty samples something else


def test_inheritance_falls_back_to_transformers_defaults_and_refuses_what_it_cannot_record() -> (
    None
):
    bare = inherit_generation_config(SamplingParams(), {}, "llama")
    assert (bare.top_k, bare.repetition_penalty, bare.min_p) == (50, 1.0, 0.0)
    gemma = inherit_generation_config(SamplingParams(), {"top_k": 64, "top_p": 0.95}, "gemma")
    assert gemma.top_k == 64 and gemma.top_p == 1.0  # top_p is the caller's
    with pytest.raises(SamplingError, match="no_repeat_ngram_size=3"):
        inherit_generation_config(SamplingParams(), {"no_repeat_ngram_size": 3}, "odd")
    with pytest.raises(SamplingError, match=r"top_p 1\.5 is not in"):
        SamplingParams(top_p=1.5)
    with pytest.raises(SamplingError, match="unknown parameter"):
        SamplingParams.from_dict({"temperature": 1.0, "typical_p": 0.9})
