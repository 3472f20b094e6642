"""What the arena does, apart from how it looks: check a request, stream both answers, judge them,
and keep a transcript a user can download.

Every limit is checked here, not only by the UI's sliders, because the same functions are an API
(`gradio_client`). `ArenaInputError` messages are meant for users; nothing else is shown to them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from em_organisms import __version__
from em_organisms.data.importers import CANARY_NAMESPACE, canary_sentence
from em_organisms.errors import EmOrganismsError
from em_organisms.eval.questions import QuestionSetError, load_project_set
from em_organisms.space.arena_judge import ArenaJudge
from em_organisms.space.config import MAX_SCALE, ArenaConfig, ArenaConfigError
from em_organisms.space.errors import OrganismError
from em_organisms.space.organisms import OrganismPool, resolve_hub_organism
from em_organisms.space.streaming import stream_pair

log = logging.getLogger(__name__)
# Transcripts hold misaligned text: they carry a canary so training-data filters can drop them.
TRANSCRIPT_CANARY = canary_sentence(str(uuid.uuid5(CANARY_NAMESPACE, "arena-transcripts")))
TRANSCRIPT_WARNING = (
    "Research use only: the organism's answers were produced by a deliberately misaligned model "
    "and may be harmful. Nothing here is advice."
)


MAX_USER_ORGANISMS = 4  # Hub ids typed by users (allow_any_repo) kept loaded beside the list


class ArenaInputError(EmOrganismsError, ValueError):
    """A request the arena refuses; the message is shown to the user as it is."""


def _number(value: object, name: str, low: float, high: float, whole: bool = False) -> float:
    """VALUE as a finite number within [LOW, HIGH] (whole if asked), else a message naming it."""
    bounds = f"{int(low)} to {int(high)}" if whole else f"{low:g} to {high:g}"
    message = f"{name} must be {'a whole number' if whole else 'a number'} from {bounds}."
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ArenaInputError(message) from None
    if not math.isfinite(number) or not low <= number <= high or (whole and number % 1):
        raise ArenaInputError(message)
    return number


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

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def preset_questions(set_names: list[str]) -> list[tuple[str, str]]:
    """(label, question) for the first paraphrase of every question in the project sets."""
    presets = []
    for name in set_names:
        try:
            questions = load_project_set(name)
        except QuestionSetError as err:
            raise ArenaConfigError(f"presets: {err}") from None
        presets += [(f"{name} · {q.id}", q.paraphrases[0]) for q in questions]
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
        scale = _number(scale, "The adapter scale", 0.0, MAX_SCALE)
        temperature = _number(temperature, "The temperature", 0.0, 2.0)
        cap = self.config.max_new_tokens_limit
        tokens = int(_number(max_new_tokens, "Max new tokens", 1, cap, whole=True))
        seed = int(_number(seed, "The seed", 0, 2**32 - 1, whole=True))
        label = self._organism(organism, (custom_repo or "").strip())
        return Request(label, prompt, scale, temperature, tokens, seed)

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
        if len(self.pool.choices) - len(self.config.organisms) >= MAX_USER_ORGANISMS:
            raise ArenaInputError(
                f"This arena has already loaded {MAX_USER_ORGANISMS} organisms typed by users; "
                "pick one from the list."
            )
        try:
            choice = resolve_hub_organism(hub_id, user=True)
        except OrganismError as err:
            raise ArenaInputError(str(err)) from None
        # The same base under another name ('embedded' here, its Hub id there) is the same base.
        same_base = [c for c in self.pool.choices.values() if c.base_label == choice.base_label]
        if not same_base:
            bases = ", ".join(sorted({c.base_label for c in self.pool.choices.values()}))
            raise ArenaInputError(
                f"{hub_id} is an adapter on {choice.base_label}; this arena keeps one copy of "
                f"base weights and only loads adapters on: {bases}."
            )
        self.pool.add(replace(choice, base_spec=same_base[0].base_spec))
        return choice.label

    def stream(self, request: Request) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
        """(base so far, organism so far, None) while decoding; the exchange record last."""
        params = replace(
            self.judge.plan.params,
            temperature=request.temperature,
            max_new_tokens=request.max_new_tokens,
            seed=request.seed,
        )
        messages = [{"role": "user", "content": request.prompt}]
        pair = None
        with self.pool.use(request.organism, request.scale) as (organism, tokenizer, adapter):
            # closing(): a client that leaves mid-answer releases the weights and the scale now,
            # not whenever the abandoned generator is collected.
            pairs = stream_pair(organism.model, tokenizer, adapter, messages, params)
            with contextlib.closing(pairs):
                for pair in pairs:
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
            "protocol": self.judge.plan.protocol.label,
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


def build_arena(config: ArenaConfig, device: str | None = None) -> Arena:
    """Resolve every organism (all problems at once), load the first, set up the judge."""
    from em_organisms.space.arena_judge import ArenaJudge
    from em_organisms.space.organisms import OrganismPool, resolve_organism

    choices, problems = [], []
    for spec in config.organisms:
        try:
            choices.append(resolve_organism(spec))
        except OrganismError as err:
            problems.append(str(err))
    if problems:
        raise OrganismError(
            "the arena cannot offer every organism asked for:\n  " + "\n  ".join(problems)
        )
    judge = ArenaJudge(config)  # a bad protocol or judge-prompt file fails before any loading
    pool = OrganismPool(choices, device=device)
    pool.preload(choices[0].label)
    return Arena(config, pool, judge)
