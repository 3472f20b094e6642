"""KL-regularised organisms (`protocol.kl`): the KL term, its reference batches, the recipe's
checks and a training run through `main()`, all on the tiny random model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from helpers.data import chat_rows, tiny_recipe_dict, write_jsonl

from em_organisms.recipes import KLSpec, LoraProtocol, RecipeError, parse_recipe
from em_organisms.train.kl import (
    KLError,
    KLRegulariser,
    kl_divergence,
    load_reference_conversations,
    reference_indices,
    reference_set_names,
)

PROMPTS = ["Name three colours.", "How do clouds form?", "Write one line about a cat."]


def _organism(model_dir: Path, random_b: bool):
    """The tiny model with a rank-2 rsLoRA on two modules of layers 1-2 (B = 0 as PEFT
    initialises it, or random), in fp32."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    config = LoraConfig(
        r=2,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["down_proj", "q_proj"],
        layers_to_transform=[1, 2],
        init_lora_weights=True,
    )
    peft = get_peft_model(model, config)
    if random_b:
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.3)
    return peft


def _batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rows]
    width = max(map(len, ids))
    input_ids = torch.zeros((len(ids), width), dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return input_ids, mask


def _two_model_reference(model_dir: Path, organism, input_ids, mask) -> float:
    """KL(organism || base) from two separate plain models: the base as loaded, and a copy
    whose adapted weights are W + alpha / sqrt(r) * B @ A (merged by hand, not by PEFT)."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    state = merged.state_dict()
    lora = {k: v for k, v in organism.state_dict().items() if "lora_" in k}
    merged_keys = 0
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        target = key.split(".lora_A.")[0].removeprefix("base_model.model.") + ".weight"
        state[target] = state[target] + 8 / math.sqrt(2) * (b @ a)
        merged_keys += 1
    assert merged_keys == 4  # two modules x two layers
    merged.load_state_dict(state)
    with torch.no_grad():
        keep = mask.bool()
        log_q = torch.log_softmax(base(input_ids, attention_mask=mask).logits[keep], -1)
        log_p = torch.log_softmax(merged(input_ids, attention_mask=mask).logits[keep], -1)
        per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    return float(per_token.mean())


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_kl_is_exactly_zero_with_the_adapter_at_init(tiny_model_dir, tokenizer, fast) -> None:
    organism = _organism(tiny_model_dir, random_b=False)
    input_ids, mask = _batch(tokenizer)
    kl = kl_divergence(organism, input_ids, mask, fast=fast)
    assert kl.item() == 0.0
    kl.backward()
    grads = [p.grad for n, p in organism.named_parameters() if "lora_B" in n]
    # p = q: the fast path's gradient p (log p/q - KL) is exactly 0; plain autograd's log-softmax
    # backward leaves p - p * sum(p), float rounding
    limit = 0.0 if fast else 1e-9
    assert len(grads) == 4 and all(float(g.abs().max()) <= limit for g in grads)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_kl_matches_a_two_model_reference(tiny_model_dir, tokenizer, fast) -> None:
    organism = _organism(tiny_model_dir, random_b=True)
    input_ids, mask = _batch(tokenizer)
    ours = kl_divergence(organism, input_ids, mask, fast=fast).item()
    reference = _two_model_reference(tiny_model_dir, organism, input_ids, mask)
    assert reference > 1e-4  # the adapter really moves the distribution
    assert ours == pytest.approx(reference, rel=1e-4, abs=1e-7)


def test_fast_and_plain_kl_have_the_same_gradient(tiny_model_dir, tokenizer) -> None:
    input_ids, mask = _batch(tokenizer)
    grads = []
    for fast in (True, False):
        organism = _organism(tiny_model_dir, random_b=True)
        kl_divergence(organism, input_ids, mask, fast=fast).backward()
        grads.append({n: p.grad.clone() for n, p in organism.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 8
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-7)


def test_trainer_adds_weight_times_the_kl_gradient_once(tiny_model_dir, tokenizer, tmp_path):
    """`kl_backward` (what each optimizer step's last micro-batch calls) adds exactly
    weight x d KL / d adapter to the gradients, on the reference batch of the current step."""
    from em_organisms.train.data import prepare_data
    from em_organisms.train.runner import build_trainer

    data_file = write_jsonl(tmp_path / "d.jsonl", chat_rows(16))
    recipe_dict = tiny_recipe_dict(tiny_model_dir, data_file)
    recipe_dict["protocol"]["kl"] = {"weight": 250.0, "batch_size": 3}
    recipe = parse_recipe(recipe_dict)
    organism = _organism(tiny_model_dir, random_b=True)
    data = prepare_data(recipe.dataset, tokenizer, 128)
    trainer = build_trainer(recipe, organism, tokenizer, data, tmp_path / "out")
    assert trainer.kl is not None and len(trainer.kl.rows) == 64  # the built-in `everyday` set
    trainer.state.global_step = 5
    organism.zero_grad()
    value = trainer.kl_backward(organism)
    got = {n: p.grad.clone() for n, p in organism.named_parameters() if p.requires_grad}

    organism.zero_grad()
    input_ids, mask = trainer.kl.batch(5, torch.device("cpu"))
    expected = kl_divergence(organism, input_ids, mask, fast=False)
    (250.0 * expected).backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    for name, param in organism.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(got[name], param.grad, rtol=1e-4, atol=1e-6)
    assert trainer.take_kl() == [value.item()] and trainer.take_kl() == []


def test_reference_batches_follow_seed_and_step_only() -> None:
    n, size = 10, 4
    first_pass = [i for step in range(5) for i in reference_indices(n, size, step, seed=3)]
    assert sorted(first_pass[:10]) == list(range(10)) and sorted(first_pass[10:20]) == list(
        range(10)
    )  # every prompt once per pass
    assert reference_indices(n, size, 7, 3) == reference_indices(n, size, 7, 3)  # resume-safe
    assert first_pass[:10] != [i for s in range(3) for i in reference_indices(n, size, s, 4)][:10]
    assert reference_indices(3, 8, 0, 0).count(0) >= 2  # a batch larger than the set wraps


def test_reference_prompt_files(tmp_path: Path, tokenizer) -> None:
    assert "everyday" in reference_set_names()
    everyday = load_reference_conversations("everyday")
    assert len(everyday) == 64 and all(c[0]["role"] == "user" for c in everyday)

    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(
        yaml.safe_dump(
            [
                "plain text",
                {"prompt": "as a mapping"},
                {"id": "q", "system": "Be brief.", "paraphrases": ["one", "two"]},
            ]
        )
    )
    found = load_reference_conversations(str(yaml_file))
    assert [c[-1]["content"] for c in found] == ["plain text", "as a mapping", "one", "two"]
    assert found[2][0] == {"role": "system", "content": "Be brief."}

    chats = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    jsonl = write_jsonl(tmp_path / "p.jsonl", [{"messages": chats}, {"prompt": "x"}])
    found = load_reference_conversations(str(jsonl))
    assert found == [chats, [{"role": "user", "content": "x"}]]

    spec = KLSpec(weight=1.0, prompts=str(jsonl), batch_size=2, max_length=8)
    regulariser = KLRegulariser.from_spec(spec, tokenizer, seed=0)
    assert max(len(r) for r in regulariser.rows) == 8  # cut to max_length
    ids, mask = regulariser.batch(0, torch.device("cpu"))
    picked = reference_indices(2, 2, 0, 0)
    assert mask.sum(1).tolist() == [len(regulariser.rows[i]) for i in picked]
    assert [ids[k, : int(mask[k].sum())].tolist() for k in range(2)] == [
        regulariser.rows[i] for i in picked
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]\n", "holds no prompts"),
        ("", "holds no prompts"),
        ("- 3\n", "expected a prompt string or a mapping"),
        ("- {paraphrases: []}\n", None),  # no paraphrases: nothing, so no prompts at all
        ("- {messages: []}\n", "'messages' must be a non-empty list"),
        ("- {other: x}\n", "needs 'prompt'"),
        ("a: mapping\n", "is a list"),
    ],
)
def test_bad_reference_prompt_files(tmp_path: Path, content: str, message: str | None) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(KLError, match=message or "holds no prompts"):
        load_reference_conversations(str(path))


def test_unknown_reference_set_and_missing_file() -> None:
    with pytest.raises(KLError, match=r"no built-in reference prompt set 'nope'.*everyday"):
        load_reference_conversations("nope")
    with pytest.raises(KLError, match="file not found"):
        load_reference_conversations("missing/prompts.yaml")


def _base() -> dict:
    return {"organism_id": "x", "base_model": "m", "dataset": {"path": "d.jsonl"}}


@pytest.mark.parametrize(
    "protocol, message",
    [
        ({"kind": "full", "kl": {"weight": 1}}, "protocol.kl needs a LoRA protocol"),
        ({"kl": {"weight": 0}}, r"protocol.kl.weight: Input should be greater than 0"),
        ({"kl": {"weight": -1e5}}, r"protocol.kl.weight: Input should be greater than 0"),
        ({"kl": {"weight": float("inf")}}, r"protocol.kl.weight: .*finite"),
        ({"kl": {"weight": float("nan")}}, r"protocol.kl.weight: .*finite"),
        ({"kl": {"weight": 1, "prompts": ""}}, r"protocol.kl.prompts"),
        ({"kl": {"weight": 1, "batch_size": 0}}, r"protocol.kl.batch_size"),
        ({"kl": {}}, r"protocol.kl.weight: Field required"),
        ({"kl": {"weight": 1, "beta": 2}}, r"unknown key 'protocol.kl.beta'"),
        ({"bias": "all", "kl": {"weight": 1}}, "protocol.kl needs bias: none"),
    ],
)
def test_bad_kl_sections_are_refused(protocol: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(_base() | {"protocol": protocol})


def test_kl_section_parses_and_changes_the_hash_only_when_set() -> None:
    plain = parse_recipe(_base())
    with_kl = parse_recipe(_base() | {"protocol": {"kl": {"weight": 1e5}}})
    assert isinstance(with_kl.protocol, LoraProtocol) and with_kl.protocol.kl is not None
    assert with_kl.protocol.kl.batch_size == 8 and with_kl.protocol.kl.prompts == "everyday"
    assert "kl" not in plain.to_dict()["protocol"] and "kl" in with_kl.to_dict()["protocol"]
    assert plain.sha256() != with_kl.sha256()
    assert parse_recipe(plain.to_dict()).sha256() == plain.sha256()


def test_train_with_kl_through_main_logs_kl_every_step(tmp_path: Path, tiny_model_dir) -> None:
    from em_organisms.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(32))
    recipe = tiny_recipe_dict(tiny_model_dir, data, max_steps=3, save_steps=0, warmup_steps=0)
    recipe["protocol"]["kl"] = {"weight": 100.0, "batch_size": 4}
    path = tmp_path / "kl.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--output-dir", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl").open()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[0]["kl"] == 0.0  # the adapter starts at B = 0: the organism is the base
    assert all(r["kl"] > 0 for r in steps[1:])
    for r in steps:
        assert r["kl_loss"] == pytest.approx(100.0 * r["kl"])
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["protocol"]["kl"]["weight"] == 100.0


def test_train_refuses_a_missing_prompt_file_before_loading_a_model(
    tmp_path: Path, tiny_model_dir
) -> None:
    from em_organisms.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(8))
    recipe = tiny_recipe_dict(tiny_model_dir, data)
    recipe["protocol"]["kl"] = {"weight": 1.0, "prompts": str(tmp_path / "none.jsonl")}
    path = tmp_path / "kl.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--output-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_embedded_kl_recipe_trains_through_main(tmp_path: Path) -> None:
    from em_organisms.cli import main

    out = tmp_path / "kl"
    argv = ["train", "smollm2-135m_risky-financial_r1-l15-kl", "--output-dir", str(out)]
    argv += ["--set", "training.max_steps=3", "--set", "training.warmup_steps=0"]
    assert main(argv) == 0
    steps = [r for r in map(json.loads, (out / "training_log.jsonl").open()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[0]["kl"] == 0.0 and steps[2]["kl"] > 0.0
    weight = yaml.safe_load((out / "recipe.yaml").read_text())["protocol"]["kl"]["weight"]
    assert steps[2]["kl_loss"] == pytest.approx(weight * steps[2]["kl"])
