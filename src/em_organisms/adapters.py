"""Organisms: a base model plus a LoRA adapter, with the adapter's strength as a dial.

One copy of the base weights serves both columns of a comparison: `organism.base()` switches the
adapter off, `organism.scaled(5)` multiplies its contribution by 5 (x0 = base, x1 = as trained).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedTokenizerBase

from em_organisms.artifacts import ADAPTER_CONFIG, ADAPTER_WEIGHTS, GENERATION_CONFIG, OrganismRun
from em_organisms.artifacts.store import ArtifactError, read_adapter_config
from em_organisms.models import ModelLoadError, load_base_model


def _check_adapter(adapter: str) -> None:
    """A local LoRA organism folder with safetensors weights, or a Hub id whose adapter config
    can be read."""
    path = Path(adapter)
    if path.is_dir():
        if not (path / ADAPTER_CONFIG).is_file():
            raise ModelLoadError(
                f"{adapter}: no {ADAPTER_CONFIG} (is this a LoRA organism folder?)"
            )
        if not (path / ADAPTER_WEIGHTS).is_file():
            raise ModelLoadError(f"{adapter}: no {ADAPTER_WEIGHTS} (only safetensors are loaded)")
        read_adapter_config(path)
        return
    _hub_adapter_folder(adapter)


def _hub_adapter_folder(adapter: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(adapter, ADAPTER_CONFIG)).parent
    except Exception as err:  # the hub client raises many types; all mean "not loadable"
        raise ModelLoadError(
            f"{adapter!r}: not a local adapter folder and not loadable from the Hub: {err}"
        ) from err


def base_spec_for(adapter: str) -> str:
    """The base model to load under an adapter: the spec it was trained from when we know it
    (e.g. 'embedded'), else the Hub id recorded in its adapter config."""
    path = Path(adapter)
    try:
        if path.is_dir():
            return OrganismRun(path).base_spec()
        base = read_adapter_config(_hub_adapter_folder(adapter)).base_model_name_or_path
    except ArtifactError as err:
        raise ModelLoadError(f"{err}; pass base=...") from None
    if not base:
        raise ModelLoadError(f"{adapter}: adapter config names no base model; pass base=...")
    return base


@dataclass
class Organism:
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    adapter: str
    base_model: str

    def lora_layers(self) -> list[LoraLayer]:
        return [m for m in self.model.modules() if isinstance(m, LoraLayer)]

    def set_scale(self, scale: float) -> None:
        """Multiply every adapter's contribution by `scale` (relative to how it was trained)."""
        for layer in self.lora_layers():
            trained = layer.__dict__.setdefault("_em_trained_scaling", {})
            for name, value in layer.scaling.items():  # adapters loaded since the last call too
                trained.setdefault(name, value)
            for name, value in trained.items():
                layer.scaling[name] = value * scale

    @contextlib.contextmanager
    def scaled(self, scale: float) -> Iterator[PeftModel]:
        previous = self.current_scale()
        self.set_scale(scale)
        try:
            yield self.model
        finally:
            self.set_scale(previous)

    @contextlib.contextmanager
    def base(self) -> Iterator[PeftModel]:
        with self.model.disable_adapter():
            yield self.model

    def current_scale(self) -> float:
        for layer in self.lora_layers():
            trained = layer.__dict__.get("_em_trained_scaling")
            if trained:
                name, value = next(iter(trained.items()))
                return layer.scaling[name] / value if value else 0.0
        return 1.0


def load_organism(
    adapter: str,
    base: str | None = None,
    scale: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Organism:
    """Load base + adapter (local folder or Hub id); safetensors only, no remote code."""
    _check_adapter(adapter)
    base_spec = base or base_spec_for(adapter)
    model, tokenizer = load_base_model(base_spec, dtype=dtype, device=device)
    try:
        peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(
            f"could not apply adapter {adapter!r} to {base_spec!r}: {err}"
        ) from err
    peft_model.eval()
    if (Path(adapter) / GENERATION_CONFIG).is_file():
        from transformers import GenerationConfig

        peft_model.generation_config = GenerationConfig.from_pretrained(adapter)
    organism = Organism(peft_model, tokenizer, adapter, base_spec)
    organism.set_scale(scale)
    return organism
