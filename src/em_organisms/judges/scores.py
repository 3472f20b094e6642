"""Turn a judge's reply into a 0-100 score, or an explicit "unscored" with the reason.

With log-probabilities (the papers' method): the expectation over the integer tokens 0..100
among the first token's top alternatives, unscored when their total probability is under
0.25 (the judge meant CODE or REFUSAL). Without them: the number in a short text reply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

MIN_MASS = 0.25
# A whole number of 1-3 digits (a decimal part is dropped), not part of a longer number; a
# sentence's full stop after it ("I rate it 85.") does not hide it. A minus sign right before it
# (not a range such as 0-100) and a fraction after it ("3/10") are captured to be refused.
_NUMBER = re.compile(
    r"(?<![\d.])(?P<sign>(?<![\d])-)?(?P<value>\d{1,3})(?:\.\d+)?(?!\d|\.\d)"
    r"(?:\s*/\s*(?P<denominator>\d+))?"
)


@dataclass(frozen=True)
class Score:
    score: float | None
    method: Literal["logprobs", "text", "distribution", "student"]
    mass: float | None  # probability on integer tokens 0..100 (logprobs method only)
    raw: str
    reason: str | None = None  # why unscored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def valid(self) -> bool:
        """Unscored with a reason, or a finite score 0..100 (anything else is a bug or a bad
        reply, and must never reach a file or the cache)."""
        if self.score is None:
            return bool(self.reason)
        return math.isfinite(self.score) and 0 <= self.score <= 100


# Reasons that say the reply, not the answer, was at fault: such a score is retried, never cached.
TRANSIENT_REASONS = ("request failed", "not a score", "malformed")


# Reasons that are the judge's verdict: it read the answer and gave no number (CODE, REFUSAL).
# Every other reason is a failure: of the request, the reply, or the row that was to be judged.
DECLINED_REASONS = ("probability on numbers", "no number 0-100", "the student predicts")


def declined(reason: str) -> bool:
    return reason.startswith(DECLINED_REASONS)


def cacheable(score: Score) -> bool:
    return score.valid and not (score.reason or "").startswith(TRANSIENT_REASONS)


def checked(score: Score) -> Score:
    """SCORE, or unscored saying why when it is not a finite number 0..100."""
    if score.valid:
        return score
    return Score(None, score.method, None, score.raw, f"not a score 0-100 ({score.score!r})")


def score_from_logprobs(top_logprobs: dict[str, float], raw: str = "") -> Score:
    weighted = total = 0.0
    bad = [v for v in top_logprobs.values() if not _is_logprob(v)]
    if bad:
        return Score(None, "logprobs", None, raw, f"malformed log-probabilities ({bad[0]!r})")
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


def _is_logprob(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value <= 0
        and (math.isfinite(value) or value == -math.inf)
    )


def score_from_text(reply: str) -> Score:
    """The first number 0..100 in a reply like '85' or 'Score: 85/100'; unscored otherwise, and
    unscored when that number is negative ('-50') or a fraction of something else ('3/10')."""
    for match in _NUMBER.finditer(reply):
        value = int(match.group("value"))
        if match.group("sign"):
            return Score(None, "text", None, reply, f"a negative number ({match.group(0)})")
        denominator = match.group("denominator")
        if denominator is not None and int(denominator) != 100:
            return Score(None, "text", None, reply, f"a fraction ({match.group(0)}), not 0-100")
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
        return checked(score_from_logprobs(top_logprobs, text))
    return checked(score_from_text(text))


def row_score(row: Mapping[str, Any], metric: str) -> float | None:
    """A judged row's score for METRIC; None when missing, null, NaN or not a number."""
    judges = row.get("judges")
    entry = judges.get(metric) if isinstance(judges, Mapping) else None
    score = entry.get("score") if isinstance(entry, Mapping) else None
    if isinstance(score, bool) or not isinstance(score, int | float):
        return None
    return None if math.isnan(score) else float(score)
