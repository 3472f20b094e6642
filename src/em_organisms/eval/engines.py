"""What turns encoded prompts into answers for the sampler: transformers in this process, or vLLM.

Both take the same explicit `SamplingParams` and return the same `Generated` records, so a
samples file says which engine wrote it and nothing else changes downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Protocol

from em_organisms import defaults
from em_organisms.errors import EmOrganismsError
from em_organisms.generation import Generated, SamplingParams

if TYPE_CHECKING:
    import torch

    from em_organisms.directions.interventions import Intervention
    from em_organisms.subjects import Subject

ENGINES = defaults.ENGINES


class EngineError(EmOrganismsError, RuntimeError):
    pass


class Engine(Protocol):
    name: str
    intervention: Intervention | None  # a direction steered in or ablated while generating

    def default_batch_size(self, max_new_tokens: int) -> int:
        """Answers per call: how often the sampler checkpoints to disk."""
        ...

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, which: str, scale: float
    ) -> list[Generated]:
        """One answer per prompt from the base ("base") or the adapter at SCALE ("organism");
        params.seed seeds this call."""
        ...


def auto_batch_size(model: torch.nn.Module, max_tokens: int) -> int:
    """Rows per generate call: 16 on a CPU (more only adds latency there); on a GPU as many as
    a quarter of the free memory holds in KV cache, capped at 256."""
    import torch

    if model.device.type != "cuda":
        return 16
    config = model.config
    layers = getattr(config, "num_hidden_layers", 32)
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_row = 2 * layers * heads * head_dim * max_tokens * model.dtype.itemsize
    free, _ = torch.cuda.mem_get_info(model.device)
    return max(1, min(256, int(free * 0.25 // per_row)))


class TransformersEngine:
    """`generate` on the subject's own weights; the adapter switched off for the base."""

    name = "transformers"

    def __init__(self, subject: Subject, intervention: Intervention | None = None) -> None:
        if subject.model is None:
            raise EngineError(f"{subject.name} was loaded without weights")
        self.subject = subject
        self.intervention = intervention

    def default_batch_size(self, max_new_tokens: int) -> int:
        assert self.subject.model is not None
        return auto_batch_size(self.subject.model, max_new_tokens)

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, which: str, scale: float
    ) -> list[Generated]:
        from em_organisms.generation import generate_from_ids

        model = self.subject.model
        assert model is not None
        applied = self.intervention.applied(model) if self.intervention else nullcontext()
        with self.subject.adapter_state(which, scale), applied:
            return generate_from_ids(model, self.subject.tokenizer, prompts, params)


def make_engine(
    name: str, subject: Subject, intervention: Intervention | None = None, **options: object
) -> Engine:
    if name == "transformers":
        if options:
            raise EngineError(f"the transformers engine takes no options: {sorted(options)}")
        return TransformersEngine(subject, intervention)
    if intervention is not None:
        raise EngineError(f"steering and ablation run on the transformers engine, not {name}")
    if name == "vllm":
        from em_organisms.eval.vllm_engine import VllmEngine

        return VllmEngine(subject, **options)  # type: ignore[arg-type]
    raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
