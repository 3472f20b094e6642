"""What the arena does, apart from how it looks: check a request, stream both answers, judge them,
and keep a transcript a user can download.

Every limit is checked here, not only by the UI's sliders, because the same functions are an API
(`gradio_client`). `ArenaInputError` messages are meant for users; nothing else is shown to them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_organisms import __version__
from em_organisms.data.importers import CANARY_NAMESPACE, canary_sentence
from em_organisms.eval.questions import load_project_set
from em_organisms.generation import SamplingParams
from em_organisms.space.config import MAX_SCALE, ArenaConfig
from em_organisms.space.errors import OrganismError
from em_organisms.space.judging import ArenaJudge
from em_organisms.space.organisms import OrganismPool, resolve_hub_organism
from em_organisms.space.streaming import stream_pair

log = logging.getLogger(__name__)
# Transcripts hold misaligned text: they carry a canary so training-data filters can drop them.
TRANSCRIPT_CANARY = canary_sentence(str(uuid.uuid5(CANARY_NAMESPACE, "arena-transcripts")))
TRANSCRIPT_WARNING = (
    "Research use only: the organism's answers were produced by a deliberately misaligned model "
    "and may be harmful. Nothing here is advice."
)


class ArenaInputError(ValueError):
    """A request the arena refuses; the message is shown to the user as it is."""


@dataclass(frozen=True)
class Request:
    organism: str
    prompt: str
    scale: float
    temperature: float
    max_new_tokens: int
    seed: int


@dataclass
class Transcript:
    """One user's exchanges, newest last; what the download button hands out."""

    exchanges: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        payload = {
            "warning": TRANSCRIPT_WARNING,
            "canary": TRANSCRIPT_CANARY,
            "em_organisms_version": __version__,
            "exchanges": self.exchanges,
        }
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"arena-transcript-{uuid.uuid4().hex[:12]}.json"
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def preset_questions(set_names: list[str]) -> list[tuple[str, str]]:
    """(label, question) for the first paraphrase of every question in the project sets."""
    presets = []
    for name in set_names:
        for question in load_project_set(name):
            presets.append((f"{name} · {question.id}", question.paraphrases[0]))
    return presets


class Arena:
    def __init__(self, config: ArenaConfig, pool: OrganismPool, judge: ArenaJudge) -> None:
        self.config, self.pool, self.judge = config, pool, judge
        self.presets = preset_questions(config.presets)

    def check(
        self,
        organism: str,
        custom_repo: str,
        prompt: str,
        scale: float,
        temperature: float,
        max_new_tokens: int,
        seed: int,
    ) -> Request:
        """A request within every limit, or ArenaInputError saying which one and why."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise ArenaInputError("Type a question or pick a preset first.")
        limit = self.config.max_prompt_chars
        if len(prompt) > limit:
            raise ArenaInputError(
                f"The prompt is too long: {len(prompt)} characters; this arena takes at most "
                f"{limit}. Shorten it and ask again."
            )
        if not 0.0 <= float(scale) <= MAX_SCALE:
            raise ArenaInputError(f"The adapter scale must be between 0 and {MAX_SCALE:g}.")
        if not 0.0 <= float(temperature) <= 2.0:
            raise ArenaInputError("The temperature must be between 0 and 2.")
        cap = self.config.max_new_tokens_limit
        if not 1 <= int(max_new_tokens) <= cap:
            raise ArenaInputError(f"Max new tokens must be between 1 and {cap}.")
        if not 0 <= int(seed) < 2**32:
            raise ArenaInputError("The seed must be a whole number from 0 to 4294967295.")
        label = self._organism(organism, (custom_repo or "").strip())
        return Request(
            label, prompt, float(scale), float(temperature), int(max_new_tokens), int(seed)
        )

    def _organism(self, organism: str, custom_repo: str) -> str:
        if custom_repo:
            if not self.config.allow_any_repo:
                raise ArenaInputError("This arena only offers the organisms in its list.")
            return self._add_hub_organism(custom_repo)
        if organism not in self.pool.choices:
            raise ArenaInputError(f"Unknown organism {organism!r}; pick one from the list.")
        return organism

    def _add_hub_organism(self, hub_id: str) -> str:
        if hub_id in self.pool.choices:
            return hub_id
        try:
            choice = resolve_hub_organism(hub_id)
        except OrganismError as err:
            raise ArenaInputError(str(err)) from None
        if choice.base_spec not in self.pool.bases:
            bases = ", ".join(sorted({c.base_label for c in self.pool.choices.values()}))
            raise ArenaInputError(
                f"{hub_id} is an adapter on {choice.base_label}; this arena keeps one copy of "
                f"base weights and only loads adapters on: {bases}."
            )
        self.pool.add(choice)
        return choice.label

    def stream(self, request: Request) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
        """(base so far, organism so far, None) while decoding; the exchange record last."""
        params = SamplingParams(
            temperature=request.temperature,
            top_p=1.0,
            max_new_tokens=request.max_new_tokens,
            seed=request.seed,
        )
        messages = [{"role": "user", "content": request.prompt}]
        pair = None
        with self.pool.use(request.organism, request.scale) as (organism, tokenizer, adapter):
            for pair in stream_pair(organism.model, tokenizer, adapter, messages, params):
                yield pair.base, pair.organism, None
        assert pair is not None  # max_new_tokens >= 1 yields at least once
        choice = self.pool.choices[request.organism]
        record = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "organism": choice.label,
            "base_model": choice.base_label,
            "adapter": choice.summary,
            "scale": request.scale,
            "question": request.prompt,
            "sampling": params.to_dict(),
            "answers": {"base": pair.base, "organism": pair.organism},
            "finish_reasons": dict(zip(("base", "organism"), pair.finish_reasons, strict=True)),
            "completion_tokens": dict(zip(("base", "organism"), pair.tokens, strict=True)),
            "judge": None,
        }
        yield pair.base, pair.organism, record

    def judge_exchange(self, exchange: dict[str, Any]) -> dict[str, Any]:
        verdict = self.judge.score_pair(exchange["question"], exchange["answers"])
        verdict["calibration"] = self.judge.calibration.text
        return verdict
