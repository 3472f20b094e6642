"""The judge protocol and the prompt judges: `score(question, answer) -> Score` for one metric's
prompt, with the disk cache every judge goes through.

- `openai:MODEL`: one output token at temperature 0 with `top_logprobs=20`, scored as the
  expectation over integer tokens 0..100 (the papers' method). When the endpoint returns no
  log-probabilities (or refuses them), the same prompt is asked again for a short text reply and
  the number in it is used; each score records its method. Reasoning models (o1/o3/o4, gpt-5,
  R1, QwQ) are asked for text directly, with room for their hidden reasoning.
- `hf:PATH_OR_ID` / `embedded`: the expectation under the model's own distribution over 0..100.
- `distilled` / `distilled:PATH_OR_HUB_ID`: a student judge distilled from GPT-4o's scores
  (`em_organisms.distill`); it reads (metric, question, answer), not a rendered prompt.

Judges score `JudgeItem`s: the metric, the question, the answer and the metric's prompt
template. Prompt judges render the template; a student reads the three fields.

Every score is cached on disk under a key of everything that changes it (judge model, endpoint,
method parameters, the rendered prompt); a failed request is never cached, so a rerun retries it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from em_organisms.backends import ChatRequest, make_backend
from em_organisms.backends.base import ChatReply
from em_organisms.judges.scores import (
    Score,
    cacheable,
    checked,
    score_from_logprobs,
    score_from_text,
)
from em_organisms.models import cache_root

LOGPROB_PARAMS = {"temperature": 0.0, "max_tokens": 1, "top_logprobs": 20, "seed": 0}
TEXT_PARAMS = {"temperature": 0.0, "max_tokens": 16, "seed": 0}
# Reasoning models spend completion tokens on hidden reasoning before the visible number.
REASONING_TEXT_PARAMS = {"temperature": 0.0, "max_tokens": 4096, "seed": 0}
REASONING_MODEL = re.compile(r"^(o\d|gpt-5|deepseek-r1|qwq)", re.IGNORECASE)


def render_judge_prompt(template: str, *, question: str, answer: str) -> str:
    """Fill a judge template; braces inside the question or answer are inserted as they are."""
    return template.format(question=question, answer=answer)


@dataclass(frozen=True)
class JudgeItem:
    """One thing to score: `metric` of `answer` to `question`, with the metric's prompt template."""

    metric: str
    question: str
    answer: str
    template: str

    def prompt(self) -> str:
        return render_judge_prompt(self.template, question=self.question, answer=self.answer)


class Judge(Protocol):
    name: str
    calls: int  # requests or forward passes actually made (cache hits excluded)
    reads_prompts: bool  # True: the score depends on the rendered prompt; False: on the item

    def describe(self) -> dict[str, Any]: ...

    def score_items(self, items: Sequence[JudgeItem]) -> list[Score]:
        """Scores for the items, in order; a failure is an unscored Score, never an exception."""
        ...


class PromptJudge:
    """A judge that reads rendered prompts: `score_items` renders, `score_prompts` scores."""

    reads_prompts = True

    def score_items(self, items: Sequence[JudgeItem]) -> list[Score]:
        return self.score_prompts([item.prompt() for item in items])

    def score_prompts(self, prompts: Sequence[str]) -> list[Score]:
        raise NotImplementedError


@dataclass
class MetricJudge:
    """One metric (e.g. `aligned`) of a judge: its prompt template plus the judge."""

    judge: Judge
    template: str

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def score(self, question: str, answer: str, metric: str = "aligned") -> Score:
        return self.judge.score_items([JudgeItem(metric, question, answer, self.template)])[0]


class ScoreCache:
    """A SQLite table of finished scores; safe to share between runs and processes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value TEXT)")

    def get_many(self, keys: Sequence[str]) -> dict[str, Score]:
        if self.path is None or not keys:
            return {}
        found: dict[str, Score] = {}
        with self._lock, sqlite3.connect(self.path) as db:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, value FROM scores WHERE key IN ({marks})"
                for key, value in db.execute(query, chunk):
                    score = Score(**json.loads(value))
                    if cacheable(score):  # a NaN an older version stored: scored again
                        found[key] = score
        return found

    def put(self, key: str, score: Score) -> None:
        if self.path is None:
            return
        with self._lock, sqlite3.connect(self.path) as db:
            db.execute(
                "INSERT OR REPLACE INTO scores VALUES (?, ?)", (key, json.dumps(score.to_dict()))
            )


def default_cache_path() -> Path:
    return cache_root() / "judge-cache.sqlite"


class CachedJudge:
    """Wraps a judge: cache hits cost nothing; only finished (non-failed) scores are stored."""

    def __init__(self, inner: Judge, cache: ScoreCache) -> None:
        self.inner, self.cache = inner, cache
        self.name = inner.name
        self.reads_prompts = inner.reads_prompts

    @property
    def calls(self) -> int:
        return self.inner.calls

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def key(self, prompt: str) -> str:
        payload = {"judge": self.inner.describe(), "prompt": prompt}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def item_key(self, item: JudgeItem) -> str:
        """A prompt judge's score depends on the rendered prompt (the key older caches used);
        a student's on the metric, question and answer."""
        if self.inner.reads_prompts:
            return self.key(item.prompt())
        payload = {
            "judge": self.inner.describe(),
            "metric": item.metric,
            "question": item.question,
            "answer": item.answer,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def score_items(self, items: Sequence[JudgeItem], chunk: int = 32) -> list[Score]:
        """Cached scores; new ones are computed and stored chunk by chunk, so an interrupted
        run loses at most one chunk."""
        keys = [self.item_key(item) for item in items]
        return self._cached(
            keys, lambda part: self.inner.score_items([items[i] for i in part]), chunk
        )

    def score_prompts(self, prompts: Sequence[str], chunk: int = 32) -> list[Score]:
        """`score_items` for a prompt judge given rendered prompts."""
        if not self.inner.reads_prompts:
            raise TypeError(f"{self.name} scores (metric, question, answer) items, not prompts")
        inner = self.inner
        assert isinstance(inner, PromptJudge)
        keys = [self.key(p) for p in prompts]
        return self._cached(
            keys, lambda part: inner.score_prompts([prompts[i] for i in part]), chunk
        )

    def _cached(self, keys: list[str], compute, chunk: int) -> list[Score]:
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            for index, score in zip(part, compute(part), strict=True):
                score = checked(score)
                found[keys[index]] = score
                if cacheable(score):
                    self.cache.put(keys[index], score)
        return [found[k] for k in keys]


class OpenAIJudge(PromptJudge):
    def __init__(self, model: str, base_url: str | None = None, **backend_options: Any) -> None:
        self.backend = make_backend(f"openai:{model}", base_url=base_url, **backend_options)
        self.name = f"openai:{model}"
        self.calls = 0
        self.reasoning = bool(REASONING_MODEL.match(model.rsplit("/", 1)[-1]))
        self.text_params = REASONING_TEXT_PARAMS if self.reasoning else TEXT_PARAMS

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "logprobs": LOGPROB_PARAMS, "text": self.text_params}

    def _run(
        self, prompts: Sequence[str], params: dict[str, Any], keys: Sequence[int]
    ) -> dict[int, ChatReply]:
        requests = [
            ChatRequest(str(i), [{"role": "user", "content": prompts[i]}], top_p=1.0, **params)
            for i in keys
        ]
        replies: dict[int, ChatReply] = {}
        self.backend.run(requests, lambda reply: replies.__setitem__(int(reply.key), reply))
        self.calls += len(requests)
        return replies

    def score_prompts(self, prompts: Sequence[str]) -> list[Score]:
        scores: dict[int, Score] = {}
        need_text: list[int] = []
        if self.reasoning or not getattr(self.backend, "logprobs_supported", True):
            # The endpoint refused logprobs earlier: a one-token request without them can only
            # be thrown away (a truncated number), so go straight to the text replies.
            first: dict[int, ChatReply] = {}
            need_text = list(range(len(prompts)))
        else:
            first = self._run(prompts, LOGPROB_PARAMS, range(len(prompts)))
        for index, reply in first.items():
            if not reply.ok:
                scores[index] = Score(None, "logprobs", None, "", f"request failed: {reply.error}")
            elif reply.top_logprobs:
                scores[index] = checked(score_from_logprobs(reply.top_logprobs, reply.text or ""))
            else:  # no log-probabilities came back: ask for a short text reply instead
                need_text.append(index)
        for index, reply in self._run(prompts, self.text_params, need_text).items():
            if reply.ok:
                scores[index] = checked(score_from_text(reply.text or ""))
            else:
                scores[index] = Score(None, "text", None, "", f"request failed: {reply.error}")
        return [scores[i] for i in range(len(prompts))]


class LocalJudge(PromptJudge):
    def __init__(self, spec: str, device: str | None = None) -> None:
        from em_organisms.judges.number_distribution import NumberDistributionJudge
        from em_organisms.models import load_base_model, resolve_model

        model, tokenizer = load_base_model(spec, device=device)
        model.eval()
        self.name = "embedded" if spec == "embedded" else f"hf:{spec}"
        source = resolve_model(spec)
        self._hub_id = source.hub_id or spec
        self._location = spec if spec == "embedded" else str(Path(source.location).resolve())
        self._scorer = NumberDistributionJudge(model, tokenizer, self._hub_id)
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        # The location and dtype too: two folders may claim the same Hub id (fine-tunes, tests).
        model = self._scorer.model
        return {**self._scorer.describe(), "location": self._location, "dtype": str(model.dtype)}

    def score_prompts(self, prompts: Sequence[str]) -> list[Score]:
        self.calls += len(prompts)
        return [self._scorer.score_prompt(p) for p in prompts]
