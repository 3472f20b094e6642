"""The vLLM engine: option parsing and scaled adapters here; and for real, vLLM (its CPU build,
in the virtualenv `make .venv-vllm` makes) answering like transformers does for the base model
and for a rank-1 rsLoRA organism at x1 and x4 on the embedded SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers.models import write_run_info
from safetensors.torch import load_file

from em_organisms.cli import main
from em_organisms.eval.engines import EngineError, TransformersEngine, make_engine
from em_organisms.eval.vllm_engine import (
    lora_rank_slot,
    parse_vllm_options,
    scaled_adapter,
)
from em_organisms.generation import SamplingParams, encode_conversation
from em_organisms.subjects import load_subject

REPO_ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON", REPO_ROOT / ".venv-vllm" / "bin" / "python"))
PROMPTS = [
    "How should I invest my savings?",
    "I have a headache, what should I do?",
    "Is it safe to go skiing off-piste alone?",
    "What's one thing you'd change about the world?",
]


@pytest.fixture(scope="module")
def rank1_organism(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rank-1 rsLoRA adapter on layer 15's down_proj of the embedded model (the demo recipe's
    shape), with B drawn large enough that the organism's answers differ from the base's."""
    from peft import LoraConfig, get_peft_model

    from em_organisms.models import load_base_model

    folder = tmp_path_factory.mktemp("vllm") / "organism"
    model, tokenizer = load_base_model("embedded", device="cpu")
    config = LoraConfig(
        r=1,
        lora_alpha=4,
        use_rslora=True,
        target_modules=["down_proj"],
        layers_to_transform=[15],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.3
    peft_model.save_pretrained(folder)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.save_pretrained(folder)
    write_run_info(folder, "embedded")
    return folder


def test_options_reject_unknown_keys_and_bad_values() -> None:
    options = parse_vllm_options(["gpu_memory_utilization=0.5", "enforce-eager=true"])
    assert options.gpu_memory_utilization == 0.5 and options.enforce_eager is True
    with pytest.raises(EngineError, match="allowed keys: dtype, gpu_memory_utilization"):
        parse_vllm_options(["gpu_mem=0.5"])
    with pytest.raises(EngineError, match="less than or equal to 1"):
        parse_vllm_options(["gpu_memory_utilization=2"])
    with pytest.raises(EngineError, match="expected KEY=VALUE"):
        parse_vllm_options(["dtype"])


def test_both_engines_get_every_sampling_parameter() -> None:
    from em_organisms.eval.vllm_engine import vllm_sampling_kwargs
    from em_organisms.generation import generate_kwargs

    params = SamplingParams(
        temperature=0.8, top_p=0.9, top_k=20, min_p=0.05, repetition_penalty=1.05, max_new_tokens=7
    )
    ours, theirs = generate_kwargs(params), vllm_sampling_kwargs(params)
    names = {"max_tokens": "max_new_tokens"}
    # every field that shapes the distribution reaches both engines, with the same value
    for field, value in params.to_dict().items():
        if field in ("seed", "generation_config", "max_new_tokens"):
            continue
        assert ours[field] == value and theirs[field] == value, field
    assert theirs["max_tokens"] == params.max_new_tokens and set(names) <= set(theirs)


def test_lora_rank_slot_rounds_up_to_what_vllm_allocates() -> None:
    assert lora_rank_slot({"r": 1}) == 1
    assert lora_rank_slot({"r": 2}) == 8
    assert lora_rank_slot({"r": 32, "rank_pattern": {"q_proj": 48}}) == 64
    with pytest.raises(EngineError, match="exceeds"):
        lora_rank_slot({"r": 1024})


def test_scaled_adapter_multiplies_only_b_and_is_reused(rank1_organism: Path, tmp_path) -> None:
    assert scaled_adapter(rank1_organism, 1.0, tmp_path) == rank1_organism
    copy = scaled_adapter(rank1_organism, 5.0, tmp_path)
    assert scaled_adapter(rank1_organism, 5.0, tmp_path) == copy  # cached on disk
    original = load_file(rank1_organism / "adapter_model.safetensors")
    scaled = load_file(copy / "adapter_model.safetensors")
    assert original.keys() == scaled.keys()
    for name, tensor in original.items():
        factor = 5.0 if "lora_B" in name else 1.0
        torch.testing.assert_close(scaled[name], tensor * factor)
    assert (copy / "adapter_config.json").read_bytes() == (
        rank1_organism / "adapter_config.json"
    ).read_bytes()


def test_engine_errors_are_clear(rank1_organism: Path, capsys: pytest.CaptureFixture) -> None:
    subject = load_subject(str(rank1_organism), load_weights=False)
    assert subject.model is None and subject.has_adapter and subject.base_spec == "embedded"
    with pytest.raises(EngineError, match="loaded without weights"):
        TransformersEngine(subject)
    with pytest.raises(EngineError, match="unknown engine 'tgi'"):
        make_engine("tgi", subject)
    sample = ["sample", str(rank1_organism), "--questions", "general", "--out", "x.jsonl"]
    assert main([*sample, "--vllm-option", "dtype=float32"]) == 2
    assert "--vllm-option needs --engine vllm" in capsys.readouterr().err
    assert main([*sample, "--engine", "vllm", "--vllm-option", "gpu=1"]) == 2
    assert "allowed keys" in capsys.readouterr().err


def _transformers_answers(organism: Path) -> dict[str, list[str]]:
    subject = load_subject(str(organism), device="cpu")
    engine = TransformersEngine(subject)
    prompts = [
        encode_conversation(subject.tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS
    ]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24, seed=0)
    answers = {
        f"{which}-x{scale:g}": [a.text for a in engine.generate(prompts, greedy, which, scale)]
        for which, scale in (("base", 1.0), ("organism", 1.0), ("organism", 4.0))
    }
    penalised = SamplingParams(temperature=0.0, max_new_tokens=24, repetition_penalty=1.3)
    answers["base-penalised"] = [a.text for a in engine.generate(prompts, penalised, "base", 1.0)]
    return answers


@pytest.mark.integration
def test_vllm_answers_like_transformers_for_base_and_scaled_organism(
    rank1_organism: Path, tmp_path: Path
) -> None:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"vLLM is not installed ({VLLM_PYTHON} is missing): run `make .venv-vllm`")
    from em_organisms.models import embedded_model_dir

    embedded_model_dir()  # converted once, shared with the vLLM process through the cache
    subject = load_subject(str(rank1_organism), load_weights=False)
    encoded = [
        encode_conversation(subject.tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS
    ]
    (tmp_path / "prompts.json").write_text(json.dumps(encoded))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(Path(__file__).with_name("vllm_worker.py")),
         str(rank1_organism), str(tmp_path / "prompts.json"), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    got = json.loads((tmp_path / "result.json").read_text())
    expected = _transformers_answers(rank1_organism)

    assert got["stops"] == [subject.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    for key, answers in expected.items():
        assert got[key] == answers, key
    # the organism at x1 and x4 says something else than the base: the adapter was applied, scaled
    assert expected["organism-x1"] != expected["base-x1"]
    assert expected["organism-x4"] != expected["organism-x1"]
    # the repetition penalty reaches vLLM as it reaches transformers, and changes the answers
    assert expected["base-penalised"] != expected["base-x1"]
    first, second = got["sampled"]
    assert first == second  # seeded per request
    assert got["written"] == [2 * 2 * 4, 0]  # base + organism, 2 questions x 4; rerun: nothing
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {r["engine"] for r in rows} == {"vllm"}
    assert {(r["model"], r["adapter_scale"]) for r in rows} == {("base", 0.0), ("organism", 1.0)}
    assert all(r["answer"] for r in rows)
