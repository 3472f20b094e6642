"""How many judge scores of a run failed, why, and whether that many fails the run.

Every score a row holds is one of three outcomes:
- *scored*: a number 0-100;
- *declined*: the judge read the answer and gave no number (CODE, REFUSAL). That is a verdict:
  the EM conventions count it (metrics.py), and it is not a failure;
- *failed*: the request, the reply or the row was at fault (an error status, a reply that is
  not JSON, malformed log-probabilities, a row without an answer). The item is unscored with
  its reason, the run goes on, and a rerun asks the judge again (failures are never cached).

A run fails only when the failed share reaches `--fail-share` (default 1: all of them), and then
after its judged file is written, so nothing that was scored is lost.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from em_organisms.errors import RunFailed
from em_organisms.judges.scores import declined


class TooManyJudgeFailures(RunFailed):
    pass


@dataclass(frozen=True)
class JudgeOutcomes:
    """Counts over every score the rows hold (each metric of each row is one score)."""

    n_scores: int = 0
    n_scored: int = 0
    n_declined: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # short reason -> count

    @property
    def n_failed(self) -> int:
        return sum(self.failed.values())

    @property
    def failed_share(self) -> float:
        return self.n_failed / self.n_scores if self.n_scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_scores": self.n_scores,
            "n_scored": self.n_scored,
            "n_declined": self.n_declined,
            "n_failed": self.n_failed,
            "failed": dict(self.failed),
        }

    def line(self) -> str:
        """'200 judge scores: 190 scored, 4 declined (CODE/REFUSAL), 6 failed (http 503: 5, ...)'"""
        text = (
            f"{self.n_scores} judge scores: {self.n_scored} scored, "
            f"{self.n_declined} declined (CODE/REFUSAL), {self.n_failed} failed"
        )
        if self.failed:
            text += " (" + ", ".join(f"{why}: {n}" for why, n in self.failed.items()) + ")"
        return text


def reason_label(reason: str) -> str:
    """A reason without its details, to count alike failures together:
    'request failed: gave up: http 503: overloaded' -> 'request failed: http 503'."""
    request = re.match(r"request failed: (?:gave up: )?(?P<what>[^:(]+)", reason)
    if request:
        return f"request failed: {request.group('what').strip()}"
    return re.split(r" \(|: ", reason, maxsplit=1)[0].strip() or "unknown"


def judge_outcomes(rows: Iterable[Mapping[str, Any]]) -> JudgeOutcomes:
    """The outcome of every score in ROWS' `judges` (a row without one counts as failed)."""
    total = scored = declined_count = 0
    failed: Counter[str] = Counter()
    for row in rows:
        judges = row.get("judges")
        if not isinstance(judges, Mapping) or not judges:
            total += 1
            failed["not judged"] += 1
            continue
        for entry in judges.values():
            total += 1
            score = entry.get("score") if isinstance(entry, Mapping) else None
            reason = entry.get("reason") if isinstance(entry, Mapping) else None
            if isinstance(score, int | float) and not isinstance(score, bool):
                scored += 1
            elif isinstance(reason, str) and declined(reason):
                declined_count += 1
            else:
                failed[reason_label(reason) if isinstance(reason, str) else "no reason"] += 1
    return JudgeOutcomes(total, scored, declined_count, dict(failed.most_common()))


def check_failed_share(outcomes: JudgeOutcomes, fail_share: float, kept: str) -> None:
    """Raise when at least FAIL_SHARE of the scores failed (1: only when every one did); KEPT
    says where the scored ones are."""
    if outcomes.n_scores and outcomes.n_failed and outcomes.failed_share >= fail_share:
        raise TooManyJudgeFailures(
            f"{outcomes.n_failed} of {outcomes.n_scores} judge scores failed "
            f"({outcomes.failed_share:.0%}, at or above --fail-share {fail_share:g}): "
            + ", ".join(f"{why}: {n}" for why, n in outcomes.failed.items())
            + f". What was scored is kept in {kept}; fix the cause and rerun the same command "
            "to judge only the failed items"
        )
