"""What the arena does, apart from how it looks: check a request, stream both answers (three with
a direction configured: see `direction_column`), judge them, and keep a transcript a user can
download.

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
from em_organisms.space.direction_column import (
    THIRD_COLUMNS,
    TOGGLE_LABELS,
    DirectionColumn,
    Kind,
    load_direction_column,
)
from em_organisms.space.errors import OrganismError
from em_organisms.space.organisms import OrganismPool, resolve_hub_organism
from em_organisms.space.streaming import BASE_ADAPTER, stream_rows

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
    third: Kind | None = None  # what the third column shows (with a direction configured)


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
    def __init__(
        self,
        config: ArenaConfig,
        pool: OrganismPool,
        judge: ArenaJudge,
        column: DirectionColumn | None = None,
    ) -> None:
        """COLUMN: CONFIG's direction, already read and checked against every organism's base
        (`build_arena` does both before any weights load); else both are done here. It is then
        checked against the loaded model (which this loads)."""
        self.config, self.pool, self.judge = config, pool, judge
        self.presets = preset_questions(config.presets)
        if column is None and (column := load_direction_column(config)) is not None:
            column.check_bases(pool.choices.values())
        self.column = column
        if self.column is not None:
            first = pool.labels[0]
            with pool.use(first, 1.0) as (organism, _, _):
                self.column.check_model(organism.model, pool.choices[first].base_label)

    def check(
        self,
        organism: str,
        custom_repo: str,
        prompt: str,
        scale: float,
        temperature: float,
        max_new_tokens: int,
        seed: int,
        third: str | None = None,
    ) -> Request:
        """A request within every limit, or ArenaInputError saying which one and why. THIRD:
        what the third column shows, `steer` or `ablate` (only with a direction configured)."""
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
        return Request(label, prompt, scale, temperature, tokens, seed, self._third(third))

    def _third(self, third: str | None) -> Kind | None:
        if self.column is None:
            return None
        if third == "steer" or third == "ablate":
            return third
        shown = " or ".join(f"{kind!r} ({label})" for kind, label in TOGGLE_LABELS.items())
        raise ArenaInputError(f"Pick what the third column shows: {shown}.")

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
        with contextlib.closing(self.stream_answers(request)) as steps:
            for answers, record in steps:
                yield answers["base"], answers["organism"], record

    def stream_answers(
        self, request: Request
    ) -> Iterator[tuple[dict[str, str], dict[str, Any] | None]]:
        """({column: answer so far}, None) while decoding; the exchange record last. The columns
        are `base` and `organism`, and the third (`base_steered` or `organism_ablated`) where
        the request asks for it: one more row of the same batch, under a hook on that row."""
        params = replace(
            self.judge.plan.params,
            temperature=request.temperature,
            max_new_tokens=request.max_new_tokens,
            seed=request.seed,
        )
        messages = [{"role": "user", "content": request.prompt}]
        columns = ["base", "organism"]
        if request.third is not None:
            columns.append(THIRD_COLUMNS[request.third])
        step = None
        with self.pool.use(request.organism, request.scale) as (organism, tokenizer, adapter):
            adapters = [BASE_ADAPTER, adapter]
            hooked: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
            if request.third is not None:
                assert self.column is not None  # check() sets third only with a column
                adapters.append(BASE_ADAPTER if request.third == "steer" else adapter)
                intervention = self.column.intervention(request.third)
                hooked = intervention.applied(organism.model, rows=[False, False, True])
            # closing(): a client that leaves mid-answer releases the weights, the scale and the
            # hook now, not whenever the abandoned generator is collected.
            with hooked:
                steps = stream_rows(organism.model, tokenizer, adapters, messages, params)
                with contextlib.closing(steps):
                    for step in steps:
                        yield dict(zip(columns, step.texts, strict=True)), None
        assert step is not None  # max_new_tokens >= 1 yields at least once
        answers = dict(zip(columns, step.texts, strict=True))
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
            "answers": answers,
            "finish_reasons": dict(zip(columns, step.finish_reasons, strict=True)),
            "completion_tokens": dict(zip(columns, step.tokens, strict=True)),
            "judge": None,
        }
        if request.third is not None:
            assert self.column is not None
            record["intervention"] = self.column.record(request.third)
        yield answers, record

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
    column = load_direction_column(config)  # and so does a direction of another base
    if column is not None:
        column.check_bases(choices)
    pool = OrganismPool(choices, device=device)
    pool.preload(choices[0].label)
    return Arena(config, pool, judge, column)
