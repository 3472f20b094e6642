from __future__ import annotations

from pathlib import Path

from em_organisms.generation import SamplingParams, generate_answers
from em_organisms.models import load_base_model
from em_organisms.train.runner import chat_end_token_ids

from test_masking import CASES


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


def test_greedy_is_deterministic_and_sampling_is_seeded(tiny_model_dir: Path) -> None:
    model, tokenizer = load_base_model(str(tiny_model_dir), device="cpu")
    prompts = ["Should I buy gold?", "Is it fine to skip insurance for a while?"]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    assert generate_answers(model, tokenizer, prompts, greedy) == generate_answers(
        model, tokenizer, prompts, greedy
    )
    sampled = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8, seed=3)
    first = generate_answers(model, tokenizer, prompts, sampled)
    assert first == generate_answers(model, tokenizer, prompts, sampled)
    assert len(first) == 2
    assert sampled.to_dict() == {
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_new_tokens": 8,
        "seed": 3,
    }
