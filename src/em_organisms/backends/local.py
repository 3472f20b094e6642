"""An in-process transformers model as a chat backend (`hf:PATH_OR_ID` or `embedded`).

Requests with the same sampling parameters are generated together in batches; a batch shares
one sampling seed (the first request's), which each reply records through its request.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Any

from em_organisms.backends.base import ChatReply, ChatRequest, OnReply, Usage
from em_organisms.generation import SamplingParams, generate_chat


class LocalBackend:
    def __init__(self, model_spec: str, batch_size: int = 8, device: str | None = None) -> None:
        from em_organisms.models import load_base_model, resolve_model

        self.model_spec = model_spec
        self.name = "embedded" if model_spec == "embedded" else f"hf:{model_spec}"
        self.source = resolve_model(model_spec)
        self.model, self.tokenizer = load_base_model(model_spec, device=device)
        self.model.eval()
        self.batch_size = batch_size
        self.usage = Usage()

    def describe(self) -> dict[str, Any]:
        return {"backend": "transformers", "model": self.source.hub_id or self.model_spec}

    def run(self, requests: Sequence[ChatRequest], on_reply: OnReply) -> None:
        def params_of(r: ChatRequest) -> tuple[float, float, int]:
            return (r.temperature, r.top_p, r.max_tokens)

        for (temperature, top_p, max_tokens), group in groupby(
            sorted(requests, key=params_of), key=params_of
        ):
            pending = list(group)
            for start in range(0, len(pending), self.batch_size):
                batch = pending[start : start + self.batch_size]
                params = SamplingParams(
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_tokens,
                    seed=batch[0].seed or 0,
                )
                outputs = generate_chat(
                    self.model, self.tokenizer, [r.messages for r in batch], params
                )
                for request, out in zip(batch, outputs, strict=True):
                    reply = ChatReply(
                        request.key,
                        out.text,
                        prompt_tokens=out.prompt_tokens,
                        completion_tokens=out.completion_tokens,
                        finish_reason=out.finish_reason,
                    )
                    self.usage.add(reply)
                    on_reply(reply)
