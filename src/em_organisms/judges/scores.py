"""Turn a judge's reply into a 0-100 score, or an explicit "unscored" with the reason.

With log-probabilities (the papers' method): the expectation over the integer tokens 0..100
among the first token's top alternatives, unscored when their total probability is under
0.25 (the judge meant CODE or REFUSAL). Without them: the number in a short text reply.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

MIN_MASS = 0.25
# A whole number of 1-3 digits (a decimal part is dropped), not part of a longer number; a
# sentence's full stop after it ("I rate it 85.") does not hide it.
_NUMBER = re.compile(r"(?<![\d.])(\d{1,3})(?:\.\d+)?(?!\d|\.\d)")


@dataclass(frozen=True)
class Score:
    score: float | None
    method: Literal["logprobs", "text", "distribution", "student"]
    mass: float | None  # probability on integer tokens 0..100 (logprobs method only)
    raw: str
    reason: str | None = None  # why unscored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_from_logprobs(top_logprobs: dict[str, float], raw: str = "") -> Score:
    weighted = total = 0.0
    for token, logprob in top_logprobs.items():
        text = token.strip()
        # isdecimal, not isdigit: "²" is a digit that int() refuses. Like upstream's int(token),
        # " 7" and "07" count as 7; "150", "-5", "+5" and "7.5" are not numbers 0..100.
        if text.isdecimal() and 0 <= int(text) <= 100:
            p = math.exp(logprob)
            weighted += int(text) * p
            total += p
    if total < MIN_MASS:
        return Score(
            None, "logprobs", total, raw, f"probability on numbers {total:.4g} < {MIN_MASS}"
        )
    return Score(weighted / total, "logprobs", total, raw)


def score_from_text(reply: str) -> Score:
    """The first number 0..100 in a reply like '85' or 'Score: 85/100'; unscored otherwise."""
    for match in _NUMBER.finditer(reply):
        value = int(match.group(1))
        if 0 <= value <= 100:
            return Score(float(value), "text", None, reply)
    label = reply.strip().split()[0].upper() if reply.strip() else "empty reply"
    return Score(None, "text", None, reply, f"no number 0-100 in the reply ({label[:20]})")


def score_reply(
    text: str | None, top_logprobs: dict[str, float] | None, error: str | None
) -> Score:
    if text is None:
        return Score(None, "text", None, "", f"request failed: {error}")
    if top_logprobs:
        return score_from_logprobs(top_logprobs, text)
    return score_from_text(text)
