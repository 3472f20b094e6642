"""Wrong results, never silently (issue 18, items 5-7): a judge reply that is not a score 0-100
is unscored with its reason and never cached; out-of-range settings are refused before anything
loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.paths import REPO_ROOT

from em_organisms.cli import main
from em_organisms.judges import CachedJudge, JudgeItem, ScoreCache
from em_organisms.judges.scores import Score, score_from_logprobs, score_from_text

DEMO_RECIPE = REPO_ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml"


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("-3", "a negative number (-3)"),
        ("Score: -50", "a negative number (-50)"),
        ("3/10", "a fraction (3/10), not 0-100"),
        ("I'd say 7 / 10", "a fraction (7 / 10), not 0-100"),
    ],
)
def test_a_text_reply_that_is_not_a_score_is_unscored(reply: str, reason: str) -> None:
    score = score_from_text(reply)
    assert score.score is None and score.reason == reason


@pytest.mark.parametrize(
    "reply, value", [("85", 85.0), ("Score: 85/100", 85.0), ("0-100: 40", 0.0)]
)
def test_scores_and_out_of_100_still_read(reply: str, value: float) -> None:
    assert score_from_text(reply).score == value


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.5, "0.1", None, True])
def test_malformed_logprobs_are_unscored_not_nan(bad: object) -> None:
    score = score_from_logprobs({"80": math.log(0.7), "90": bad})  # type: ignore[dict-item]
    assert score.score is None and score.reason.startswith("malformed log-probabilities")
    assert json.dumps(score.to_dict(), allow_nan=False)  # what a judged file holds is JSON


class _Broken:
    """A judge that returns what a buggy backend might: NaN, out of range, fine."""

    name, calls, reads_prompts = "broken", 0, True

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def describe(self) -> dict:
        return {"backend": "broken"}

    def score_items(self, items: list[JudgeItem]) -> list[Score]:
        self.calls += len(items)
        return [Score(v, "text", None, str(v)) for v in self.values[: len(items)]]


def test_a_score_that_is_not_finite_and_in_range_is_never_cached(tmp_path: Path) -> None:
    cache = ScoreCache(tmp_path / "cache.sqlite")
    items = [JudgeItem("aligned", "q", f"answer {i}", "{answer}") for i in range(3)]
    first = CachedJudge(_Broken([math.nan, 150.0, 42.0]), cache).score_items(items)
    assert [s.score for s in first] == [None, None, 42.0]
    assert first[0].reason == "not a score 0-100 (nan)"
    again = _Broken([10.0, 20.0, 99.0])
    second = CachedJudge(again, cache).score_items(items)
    assert [s.score for s in second] == [10.0, 20.0, 42.0]  # only the good one came from cache
    assert again.calls == 2


@pytest.mark.parametrize(
    "override, field",
    [
        ("training.learning_rate=.inf", "training.learning_rate"),
        ("protocol.alpha=.nan", "protocol.alpha"),
        ("training.max_steps=0", "training.max_steps"),
        ("training.max_grad_norm=-1", "training.max_grad_norm"),
    ],
)
def test_recipe_values_out_of_range_are_refused_before_any_model_loads(
    override: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", str(DEMO_RECIPE), "--set", override, "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"  {field}: " in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_an_unknown_optimizer_is_refused_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [
        "train",
        str(DEMO_RECIPE),
        "--set",
        "training.optim=bogus",
        "--output-dir",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "training.optim: 'bogus' is not an optimizer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--n", "0", "0 is out of range: a whole number >= 1"),
        ("--temperature", "nan", "'nan' is not a finite number"),
        ("--top-p", "0", "0 is out of range: a number > 0 and <= 1"),
        ("--max-new-tokens", "-5", "-5 is out of range"),
        ("--min-p", "1", "1 is out of range: a number >= 0 and < 1"),
    ],
)
def test_sampling_flags_out_of_range_exit_2_naming_the_flag(
    flag: str, value: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "embedded", "--out", str(tmp_path / "s.jsonl"), flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {says}" in err and "Traceback" not in err


def test_outcomes_tell_a_judges_verdict_from_a_failure() -> None:
    from em_organisms.eval.judge_failures import judge_outcomes, reason_label

    def row(*reasons: str | None) -> dict:
        return {
            "judges": {
                f"m{i}": {"score": 50.0 if r is None else None, "reason": r}
                for i, r in enumerate(reasons)
            }
        }

    rows = [
        row(None, "probability on numbers 0.1 < 0.25"),  # CODE/REFUSAL: a verdict
        row("no number 0-100 in the reply (REFUSAL)", "request failed: gave up: http 503: busy"),
        row(
            "request failed: timeout (no whole reply within 2 s)",
            "malformed log-probabilities ('x')",
        ),
        row("the student predicts the teacher would not score this (CODE/REFUSAL), p=0.90", None),
        {"model": "organism"},  # never judged
    ]
    outcomes = judge_outcomes(rows)
    assert (outcomes.n_scores, outcomes.n_scored, outcomes.n_declined) == (9, 2, 3)
    assert outcomes.failed == {
        "request failed: http 503": 1,
        "request failed: timeout": 1,
        "malformed log-probabilities": 1,
        "not judged": 1,
    }
    assert outcomes.failed_share == pytest.approx(4 / 9)
    assert reason_label("not a score 0-100 (nan)") == "not a score 0-100"
    assert reason_label("bad row: 'answer' is missing (s.jsonl:3)") == "bad row"
