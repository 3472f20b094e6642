"""What the generator asks a model and how it reads the answers.

Request i is a pure function of (spec, seed rows, options, i), so a rerun plans the same keys
and the build log can tell finished requests from new ones.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any

from em_organisms.backends.base import ChatRequest
from em_organisms.data.schema import row_fingerprint
from em_organisms.data.spec import NarrowDatasetSpec, render
from em_organisms.errors import EmOrganismsError

if TYPE_CHECKING:
    from em_organisms.data.generator import BuildOptions

_PAIR = re.compile(r"<user>(.*?)</user>\s*<assistant>(.*?)</assistant>", re.S | re.I)
_TAGS = re.compile(r"</?(assistant|answer|user)>", re.I)


class PlanError(EmOrganismsError, ValueError):
    pass


def parse_conversations(text: str) -> list[tuple[str, str]]:
    """The `<user>...</user><assistant>...</assistant>` pairs in a reply (unterminated ones dropped)."""
    pairs = [(u.strip(), a.strip()) for u, a in _PAIR.findall(text)]
    return [(u, a) for u, a in pairs if u and a]


def clean_rewrite(text: str) -> str:
    """A rewritten answer without tags or wrapping quotes the model may add."""
    text = _TAGS.sub("", text).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class Planner:
    """Builds request i of a generate run, or the rewrite request of a control run's row."""

    def __init__(
        self, spec: NarrowDatasetSpec, pool: list[dict[str, Any]], options: BuildOptions
    ) -> None:
        self.spec, self.pool, self.options = spec, pool, options
        gen = spec.generation
        self.k = (
            options.examples_per_request
            if options.examples_per_request is not None
            else gen.examples_per_request
        )
        self.per_request = options.rows_per_request or gen.rows_per_request
        self.temperature = (
            options.temperature if options.temperature is not None else gen.temperature
        )

    def generate(self, index: int) -> tuple[ChatRequest, dict[str, Any]]:
        topics = self.spec.topics
        cycle, position = divmod(index, len(topics))
        order = list(range(len(topics)))
        random.Random(f"{self.options.seed}:topics:{cycle}").shuffle(order)
        topic = topics[order[position]]
        rng = random.Random(f"{self.options.seed}:examples:{index}")
        examples = rng.sample(self.pool, min(self.k, len(self.pool)))
        prompt = render(
            self.spec.generation.request_template,
            topic=topic,
            examples=[
                {"user": r["messages"][-2]["content"], "assistant": r["messages"][-1]["content"]}
                for r in examples
            ],
            n=self.per_request,
            domain=self.spec.domain,
        )
        key = f"gen-{index:06d}"
        return self._request(key, prompt, index), {
            "topic": topic,
            "examples": [r.get("id") for r in examples],
        }

    def rewrite(self, row: dict[str, Any], index: int) -> tuple[ChatRequest, dict[str, Any]]:
        template = self.spec.generation.rewrite_template
        if template is None:
            raise PlanError(f"{self.spec.name}: control mode needs generation.rewrite_template")
        user, answer = row["messages"][-2]["content"], row["messages"][-1]["content"]
        prompt = render(template, user=user, answer=answer, domain=self.spec.domain)
        pair_id = str(row.get("id") or row_fingerprint(row)[:16])
        topic = (row.get("meta") or {}).get("topic")
        return self._request(f"rewrite-{pair_id}", prompt, index), {
            "pair_id": pair_id,
            "topic": topic,
        }

    def _request(self, key: str, prompt: str, index: int) -> ChatRequest:
        gen = self.spec.generation
        return ChatRequest(
            key=key,
            messages=[
                {"role": "system", "content": gen.system_prompt},
                {"role": "user", "content": prompt},
            ],
            temperature=self.temperature,
            top_p=gen.top_p,
            max_tokens=self.options.max_new_tokens or gen.max_new_tokens,
            seed=self.options.seed * 1_000_003 + index,
        )
