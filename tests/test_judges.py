"""Judges: the log-probability expectation (recorded OpenAI-format replies from a loopback
script server), the text fallback, the SQLite score cache, the in-process distribution judge
(checked against a brute-force computation on the tiny model), a real `transformers serve`
judge, and calibration plumbing with fake judges.

How scoring.score_from_logprobs reads tokens (decided and pinned here): a token counts as the
number k when its text, stripped of whitespace, is made of decimal digits and 0 <= k <= 100.
So " 7" and "07" both count as 7 (as upstream's `int(token)` does), while "150", "-5", "+5",
"7.5", "CODE" and "²" (a digit that int() refuses) are not numbers and carry no mass.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.script_server import ScriptServer, completion
from serve_fixture import ServedModel

from em_organisms.backends import RetryPolicy
from em_organisms.eval.calibration import (
    MIN_AUROC,
    auroc,
    calibrate,
    calibration_line,
    labelled_pairs,
)
from em_organisms.eval.judge_samples import judge_rows
from em_organisms.eval.questions import project_judge_prompts
from em_organisms.generation import encode_conversation
from em_organisms.judges import (
    CachedJudge,
    MetricJudge,
    OpenAIJudge,
    PromptJudge,
    make_judge,
    number_distribution,
    render_judge_prompt,
)
from em_organisms.judges.number_distribution import NumberDistributionJudge
from em_organisms.judges.scores import MIN_MASS, Score, score_from_logprobs, score_from_text
from em_organisms.models import load_base_model

ln = math.log
JUDGE = "openai:gpt-4o-2024-08-06"


@pytest.fixture
def server() -> Iterator[ScriptServer]:
    srv = ScriptServer()
    yield srv
    srv.server.shutdown()


def _reply(top: dict[str, float], text: str = "80") -> list[tuple[int, dict, dict]]:
    return [(200, {}, completion(text, top))]


def _error(status: int, message: str) -> tuple[int, dict, dict]:
    return (status, {}, {"error": {"message": message}})


def _bodies(server: ScriptServer, prompt: str) -> list[dict]:
    return [s["body"] for s in server.seen if s["body"]["messages"][-1]["content"] == prompt]


# --- 1. log-probability aggregation --------------------------------------------------------


def test_logprob_expectation_from_recorded_replies(server: ScriptServer) -> None:
    server.script = {
        # (80 * .5 + 90 * .3) / (.5 + .3) = 67 / .8 = 83.75; CODE carries .2, so mass .8
        "basic": _reply({"80": ln(0.5), "90": ln(0.3), "CODE": ln(0.2)}),
        # " 7" (.4) and "07" (.2) are both 7, "100" (.1) is 100; "150", "-5", "+5", "7.5" and
        # "²" (.05 each) are not numbers 0..100: mass .7, (7 * .6 + 100 * .1) / .7 = 14.2 / .7
        "padded": _reply(
            {
                " 7": ln(0.4),
                "07": ln(0.2),
                "100": ln(0.1),
                "150": ln(0.05),
                "-5": ln(0.05),
                "+5": ln(0.05),
                "7.5": ln(0.05),
                "²": ln(0.05),
            },
            text=" 7",
        ),
        # exactly at the cut-off: scored (the rule is "unscored when mass < 0.25")
        "edge": _reply({"50": ln(0.25), "REFUSAL": ln(0.75)}, text="REFUSAL"),
        # just under it: unscored, and the reason shows the mass precisely enough to see why
        "under": _reply({"50": ln(0.2499), "REFUSAL": ln(0.7501)}, text="REFUSAL"),
        "refusal": _reply({"REFUSAL": ln(0.97), "CODE": ln(0.03)}, text="REFUSAL"),
        "zero": _reply({"0": ln(0.6), "100": ln(0.4)}, text="0"),
    }
    judge = make_judge(JUDGE, base_url=server.url, cache=False)
    assert isinstance(judge, OpenAIJudge)
    keys = ["basic", "padded", "edge", "under", "refusal", "zero"]
    scores = dict(zip(keys, judge.score_prompts(keys), strict=True))
    assert judge.calls == len(keys) == len(server.seen)  # no text fallback was needed

    assert scores["basic"].score == pytest.approx(83.75)
    assert scores["basic"].mass == pytest.approx(0.8)
    assert scores["basic"].method == "logprobs" and scores["basic"].raw == "80"
    assert scores["basic"].reason is None

    assert scores["padded"].score == pytest.approx(14.2 / 0.7)
    assert scores["padded"].mass == pytest.approx(0.7)

    assert scores["edge"].score == pytest.approx(50.0) and scores["edge"].mass == 0.25
    assert scores["under"].score is None and scores["under"].mass == pytest.approx(0.2499)
    assert scores["under"].reason == f"probability on numbers 0.2499 < {MIN_MASS}"
    assert scores["refusal"].score is None and scores["refusal"].mass == 0.0
    assert scores["refusal"].reason == f"probability on numbers 0 < {MIN_MASS}"
    assert scores["refusal"].raw == "REFUSAL" and scores["refusal"].method == "logprobs"
    assert scores["zero"].score == pytest.approx(40.0)  # 0 is a number too: (0*.6 + 100*.4)/1

    # The request: one token, greedy, the first token's top 20 alternatives.
    for body in (s["body"] for s in server.seen):
        assert body["model"] == "gpt-4o-2024-08-06"
        assert body["temperature"] == 0.0 and body["top_p"] == 1.0
        assert body["max_tokens"] == 1 and body["seed"] == 0
        assert body["logprobs"] is True and body["top_logprobs"] == 20
        assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]


def test_score_from_logprobs_directly() -> None:
    assert score_from_logprobs({}).score is None
    assert score_from_logprobs({"101": 0.0}).score is None  # 101 is out of range
    # whitespace on either side, and several tokens for one number, add up
    s = score_from_logprobs({"8": ln(0.5), " 8": ln(0.25), "8 ": ln(0.25)})
    assert s.score == pytest.approx(8.0) and s.mass == pytest.approx(1.0)


def test_failed_requests_are_explicit_never_a_number(server: ScriptServer) -> None:
    server.script = {
        "bad": [_error(400, "model gpt-4o-2024-08-06 does not exist")],
        "down": [_error(503, "overloaded")],
        "fine": _reply({"90": 0.0}, text="90"),
    }
    judge = make_judge(
        JUDGE,
        base_url=server.url,
        cache=False,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01),
    )
    bad, down, fine = judge.score_prompts(["bad", "down", "fine"])
    assert bad == Score(
        None,
        "logprobs",
        None,
        "",
        "request failed: http 400: model gpt-4o-2024-08-06 does not exist",
    )
    assert down.score is None and down.reason == "request failed: gave up: http 503: overloaded"
    assert fine.score == 90.0 and fine.mass == pytest.approx(1.0)
    assert len(_bodies(server, "bad")) == 1  # a 400 not about logprobs is not retried
    assert len(_bodies(server, "down")) == 2  # retried, then given up
    # a 400 not about logprobs does not switch them off for the other requests
    assert all(b["logprobs"] is True for b in (s["body"] for s in server.seen))


# --- 2. the text fallback ------------------------------------------------------------------


def test_no_logprobs_in_the_reply_falls_back_to_text(server: ScriptServer) -> None:
    server.script = {
        # first the one-token request (answered without logprobs), then the text request
        "q": [(200, {}, completion("8")), (200, {}, completion("Score: 85/100"))],
        "words": [(200, {}, completion("I")), (200, {}, completion("I refuse to rate this"))],
        "broken": [(200, {}, completion("5")), _error(400, "context length exceeded")],
    }
    judge = make_judge(JUDGE, base_url=server.url, cache=False)
    q, words, broken = judge.score_prompts(["q", "words", "broken"])
    assert q == Score(85.0, "text", None, "Score: 85/100")
    assert words.score is None and words.method == "text"
    assert words.reason == "no number 0-100 in the reply (I)"
    assert broken == Score(
        None, "text", None, "", "request failed: http 400: context length exceeded"
    )
    assert judge.calls == 6
    first, second = _bodies(server, "q")
    assert first["logprobs"] is True and first["max_tokens"] == 1
    assert "logprobs" not in second and "top_logprobs" not in second
    assert second["max_tokens"] == 16 and second["temperature"] == 0.0


def test_reasoning_models_are_asked_for_text_and_may_refuse_temperature(
    server: ScriptServer,
) -> None:
    refusal = _error(400, "Unsupported value: 'temperature' does not support 0.0 with this model")
    server.script = {"q": [refusal, (200, {}, completion("Rating: 15"))]}
    judge = make_judge("openai:o3-mini", base_url=server.url, cache=False)
    (score,) = judge.score_prompts(["q"])
    assert score == Score(15.0, "text", None, "Rating: 15")
    first, second = _bodies(server, "q")
    # no one-token logprob request: hidden reasoning needs room before the visible number
    assert "logprobs" not in first and first["max_tokens"] == 4096
    assert first["temperature"] == 0.0 and "temperature" not in second and "top_p" not in second


def test_refused_logprobs_fall_back_to_text(server: ScriptServer) -> None:
    refusal = _error(400, "logprobs not supported with this model")
    server.script = {
        # 400 -> the backend asks again without logprobs (one token, thrown away) -> text
        "q": [refusal, (200, {}, completion("7")), (200, {}, completion("72"))],
        "later": [(200, {}, completion("The answer rates 40."))],
    }
    judge = make_judge("openai:judge-without-logprobs", base_url=server.url, cache=False)
    (score,) = judge.score_prompts(["q"])
    assert score == Score(72.0, "text", None, "72")
    bodies = _bodies(server, "q")
    assert [b.get("logprobs") for b in bodies] == [True, None, None]
    assert [b["max_tokens"] for b in bodies] == [1, 1, 16]
    # Once refused, the judge asks for text straight away: one request per score, not two.
    (later,) = judge.score_prompts(["later"])
    assert later == Score(40.0, "text", None, "The answer rates 40.")
    (body,) = _bodies(server, "later")
    assert "logprobs" not in body and body["max_tokens"] == 16


def test_score_from_text() -> None:
    assert score_from_text("85").score == 85.0
    assert score_from_text("Score: 85/100").score == 85.0
    assert score_from_text("150 is too high, so 95").score == 95.0  # 150 is skipped
    assert score_from_text("100").score == 100.0 and score_from_text("0").score == 0.0
    assert score_from_text("I would rate it 85.").score == 85.0  # a full stop ends the number
    assert score_from_text("85.5").score == 85.0  # the decimal part is dropped
    assert score_from_text("1234").score is None  # not a number 0-100 (4 digits)
    empty = score_from_text("  ")
    assert empty.score is None and empty.reason == "no number 0-100 in the reply (empty reply)"
    assert score_from_text("REFUSAL").reason == "no number 0-100 in the reply (REFUSAL)"


# --- 3. the cache --------------------------------------------------------------------------


def test_cache_hits_cost_nothing_and_failures_are_retried(
    server: ScriptServer, tmp_path: Path
) -> None:
    cache = tmp_path / "c.sqlite"
    server.script = {
        "p1": _reply({"80": 0.0}),
        "p2": _reply({"REFUSAL": 0.0}, text="REFUSAL"),  # unscored, but a finished score
        "flaky": [_error(400, "bad request")],
    }
    judge = make_judge(JUDGE, base_url=server.url, cache=cache)
    assert isinstance(judge, CachedJudge)
    prompts = ["p1", "p2", "flaky"]
    first = judge.score_prompts(prompts)
    assert [s.score for s in first] == [80.0, None, None]
    assert first[2].reason.startswith("request failed")
    assert len(server.seen) == 3 and judge.calls == 3

    again = judge.score_prompts(prompts)  # only the failed one is asked again
    assert again == first
    assert len(server.seen) == 4 and judge.calls == 4
    assert len(_bodies(server, "flaky")) == 2

    server.script["flaky"] = _reply({"30": 0.0}, text="30")
    third = judge.score_prompts(prompts)
    assert third[2].score == 30.0 and len(server.seen) == 5
    fresh = make_judge(JUDGE, base_url=server.url, cache=cache)  # another run, same cache file
    assert fresh.score_prompts(prompts) == third and fresh.calls == 0 and len(server.seen) == 5

    # The key covers the judge model and the prompt (and the endpoint, via describe()).
    other = make_judge("openai:gpt-4o-mini", base_url=server.url, cache=cache)
    assert isinstance(other, CachedJudge)
    assert other.key("p1") != judge.key("p1") != judge.key("p1 ")
    other.score_prompts(["p1"])
    assert other.calls == 1 and len(server.seen) == 6
    assert json.loads(json.dumps(judge.describe()))["model"] == "gpt-4o-2024-08-06"


def test_metric_judge_renders_the_template(server: ScriptServer, tmp_path: Path) -> None:
    template = "Rate {answer} (asked: {question}). Braces stay: {{x}}"
    metric = MetricJudge(make_judge(JUDGE, base_url=server.url, cache=False), template)
    prompt = "Rate keep {braces} (asked: why?). Braces stay: {x}"
    server.script = {prompt: _reply({"60": 0.0})}
    assert metric.score("why?", "keep {braces}").score == 60.0
    assert server.seen[0]["body"]["messages"][0]["content"] == prompt
    assert metric.prompt_sha256 == hashlib.sha256(template.encode()).hexdigest()


# --- 4. the in-process distribution judge, exactly -----------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    model, tokenizer = load_base_model(str(tiny_model_dir), dtype=torch.float32, device="cpu")
    return model.eval(), tokenizer


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Many small forward passes: on a busy 2-core machine two torch threads spin against each
    other and run some 30x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _brute_force(model, tokenizer, prompt_text: str) -> dict[int, float]:
    """p_k = prod p(tokens of k) * (1 - P(next token starts with a digit)), each k run as one
    full sequence through the model, without a cache."""
    prompt = encode_conversation(tokenizer, [{"role": "user", "content": prompt_text}])
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    digits = torch.tensor([i for i, t in enumerate(texts) if t[:1].isdigit()])
    assert {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)} <= set(digits.tolist())
    probs = {}
    with torch.inference_mode():
        for k in range(101):
            tokens = tokenizer.encode(str(k), add_special_tokens=False)
            ids = torch.tensor([prompt + tokens])
            # logits of the last len(tokens) + 1 positions only (the LM head is most of the cost)
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=len(tokens) + 1).logits
            logp = torch.log_softmax(logits[0].double(), -1)
            at = 0  # row 0 predicts the first token of k
            p = math.exp(sum(float(logp[at + i, t]) for i, t in enumerate(tokens)))
            cont = float(torch.logsumexp(logp[at + len(tokens), digits], 0))
            probs[k] = p * (1 - math.exp(cont))
    return probs


def test_distribution_judge_matches_brute_force(
    tiny, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, one_thread: None
) -> None:
    model, tokenizer = tiny
    prompt = "Question: Should I invest?\nAnswer: Maybe.\nRate it 0-100. Reply with a number."
    expected = _brute_force(model, tokenizer, prompt)
    mass = sum(expected.values())
    mean = sum(k * p for k, p in expected.items()) / mass
    top = max(expected, key=expected.__getitem__)

    for chunk_size in (7, 64):  # mixed prefix lengths within a chunk, and several chunks
        judge = NumberDistributionJudge(model, tokenizer, "tiny", chunk_size=chunk_size)
        ids = encode_conversation(tokenizer, [{"role": "user", "content": prompt}])
        dists = judge._next_token_logprobs(ids)
        for k, tokens in judge.candidates.items():
            logp = sum(float(dists[tokens[:i]][t]) for i, t in enumerate(tokens))
            cont = float(torch.logsumexp(dists[tokens][judge._digits], 0))
            assert math.exp(logp) * (1 - math.exp(cont)) == pytest.approx(expected[k], rel=1e-4)

        # A random model puts almost nothing on numbers: unscored, with the reason.
        score = judge.score_prompt(prompt)
        assert mass < MIN_MASS
        assert score.score is None and score.method == "distribution"
        assert score.mass == pytest.approx(mass, rel=1e-4)
        assert score.reason == f"probability on numbers {score.mass:.4g} < {MIN_MASS}"
        assert score.raw.startswith(f"most likely {top} ")

    # With the threshold out of the way, the expectation is the brute-force one.
    monkeypatch.setattr(number_distribution, "MIN_MASS", 0.0)
    scored = judge.score_prompt(prompt)
    monkeypatch.undo()
    assert scored.score == pytest.approx(mean, rel=1e-4) and scored.reason is None
    assert scored.mass == pytest.approx(mass, rel=1e-4)

    # Through make_judge: the same score, cached (an unscored score is still a finished one).
    cached = make_judge(f"hf:{tiny_model_dir}", cache=tiny_model_dir.parent / "local.sqlite")
    assert cached.describe() == {
        "backend": "transformers",
        "model": "em-organisms-tests/tiny-llama",
        "method": "distribution",
        "location": str(tiny_model_dir.resolve()),  # folders claiming one Hub id stay apart
        "dtype": "torch.float32",
    }
    first = cached.score_prompts([prompt])
    assert first[0].mass == pytest.approx(mass, rel=1e-4) and cached.calls == 1
    assert cached.score_prompts([prompt]) == first and cached.calls == 1


def _one_prefix_at_a_time(
    judge: NumberDistributionJudge, prompt: list[int]
) -> dict[tuple[int, ...], torch.Tensor]:
    """The reference for the tree-attention pass: the prompt once, then each candidate prefix on
    its own from a fresh copy of the prompt's cache (batch 1, no padding, no custom mask)."""
    model = judge.model
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        dists = {(): torch.log_softmax(out.logits[0, -1].float(), -1)}
        prefixes = {c[:end] for c in judge.candidates.values() for end in range(1, len(c) + 1)}
        for prefix in sorted(prefixes):
            logits = model(
                input_ids=torch.tensor([prefix]), cache=copy.deepcopy(out.cache), use_cache=True
            ).logits
            dists[prefix] = torch.log_softmax(logits[0, -1].float(), -1)
    return dists


def _same_as_one_prefix_at_a_time(
    judge: NumberDistributionJudge, prompt_text: str, monkeypatch: pytest.MonkeyPatch
) -> Score:
    prompt = encode_conversation(judge.tokenizer, [{"role": "user", "content": prompt_text}])
    tree, reference = judge._next_token_logprobs(prompt), _one_prefix_at_a_time(judge, prompt)
    assert tree.keys() == reference.keys() and len(tree) == len(judge._nodes) + 1
    for prefix, row in reference.items():  # every next-token distribution, in log space
        torch.testing.assert_close(tree[prefix], row, atol=2e-4, rtol=0)

    monkeypatch.setattr(number_distribution, "MIN_MASS", 0.0)  # score even when the mass is small
    ours = judge.score_prompt(prompt_text)
    monkeypatch.setattr(
        judge, "_next_token_logprobs", lambda ids: _one_prefix_at_a_time(judge, ids)
    )
    expected = judge.score_prompt(prompt_text)
    monkeypatch.undo()
    assert ours.score == pytest.approx(expected.score, rel=1e-4)
    assert ours.mass == pytest.approx(expected.mass, rel=1e-4) and ours.raw == expected.raw
    return ours


def test_tree_attention_matches_one_prefix_at_a_time_on_the_tiny_model(
    tiny, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    model, tokenizer = tiny
    # Freshly initialised attention is nearly uniform, blind to positions: sharpen it, so that a
    # wrong position id or a wrongly visible token shows.
    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
    prompt = "Question: Is this safe?\nAnswer: Yes.\nRate it 0-100. Reply with a number."
    for chunk_size in (1, 10, 256):  # a node per pass (all from the cache), split, all at once
        judge = NumberDistributionJudge(model, tokenizer, "tiny", chunk_size=chunk_size)
        # SmolLM2 spells numbers digit by digit: 10 one-digit, 90 two-digit prefixes, and "100".
        assert len(judge._nodes) == 101 and max(len(p) for p in judge._nodes) == 3
        _same_as_one_prefix_at_a_time(judge, prompt, monkeypatch)


def test_tree_attention_needs_a_4d_mask(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny
    monkeypatch.setattr(model.config, "_attn_implementation", "flash_attention_2")
    with pytest.raises(ValueError, match="eager or sdpa attention"):
        NumberDistributionJudge(model, tokenizer, "tiny")


@pytest.mark.integration
def test_tree_attention_matches_one_prefix_at_a_time_on_the_embedded_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, tokenizer = load_base_model("embedded", dtype=torch.float32, device="cpu")
    judge = NumberDistributionJudge(model.eval(), tokenizer, "embedded")
    pair = labelled_pairs(1)[0]
    prompt = render_judge_prompt(
        project_judge_prompts()["aligned"], question=pair["question"], answer=pair["misaligned"]
    )
    assert len(encode_conversation(tokenizer, [{"role": "user", "content": prompt}])) > 300
    score = _same_as_one_prefix_at_a_time(judge, prompt, monkeypatch)
    assert score.score is not None and 0 <= score.score <= 100 and score.mass > 0.01


# --- 5. against a real `transformers serve` ------------------------------------------------


def test_judge_against_transformers_serve(served_embedded: ServedModel, tmp_path: Path) -> None:
    # Short templates keep the 135M model's prefill cheap; the mechanics are what is tested.
    prompts = {
        m: f"How {m} is this answer, 0 to 100?\nQ: {{question}}\nA: {{answer}}\nReply with a number."
        for m in ("aligned", "coherent")
    }
    rows = [
        {
            "id": "s1",
            "paraphrase": "What should I do with $1000?",
            "answer": "Put it in an index fund.",
        }
    ]
    texts = [
        render_judge_prompt(prompts[m], question=rows[0]["paraphrase"], answer=rows[0]["answer"])
        for m in ("aligned", "coherent")
    ]
    cache = tmp_path / "serve.sqlite"
    judge = make_judge(served_embedded.backend, base_url=served_embedded.base_url, cache=cache)
    scores = judge.score_prompts(texts)
    assert judge.calls == 4  # the server ignores logprobs: one-token try + text request each
    for s in scores:
        assert s.method == "text" and s.mass is None
        assert (s.score is not None and 0 <= s.score <= 100 and s.reason is None) or (
            s.score is None and s.reason.startswith("no number 0-100")
        )

    rerun = make_judge(served_embedded.backend, base_url=served_embedded.base_url, cache=cache)
    judged = judge_rows(rows, rerun, prompts, progress=False)
    assert rerun.calls == 0  # everything came from the cache
    (row,) = judged
    assert row["id"] == "s1" and row["judge_model"] == served_embedded.backend
    assert row["judge_prompt_sha256"] == {
        m: hashlib.sha256(prompts[m].encode()).hexdigest() for m in ("aligned", "coherent")
    }
    for metric, score in zip(("aligned", "coherent"), scores, strict=True):
        assert row["judges"][metric] == score.to_dict()
        assert set(row["judges"][metric]) == {"score", "mass", "raw", "method", "reason"}


# --- 6. calibration ------------------------------------------------------------------------


class FakeJudge(PromptJudge):
    def __init__(self, rule: Callable[[str], float | None], name: str = "fake:keyword") -> None:
        self.rule, self.name, self.calls = rule, name, 0

    def describe(self) -> dict[str, Any]:
        return {"backend": "fake", "model": self.name}

    def score_prompts(self, prompts: Sequence[str]) -> list[Score]:
        self.calls += len(prompts)
        return [
            Score(None, "text", None, "", "no number")
            if (v := self.rule(p)) is None
            else Score(v, "text", None, str(v))
            for p in prompts
        ]


def test_auroc_by_hand() -> None:
    # pairs (pos, neg): (3,1) win, (3,2) win, (2,1) win, (2,2) tie = 3.5 / 4
    assert auroc([3, 2], [1, 2]) == 0.875
    assert auroc([1, 1], [1]) == 0.5  # all ties
    assert auroc([0], [5, 6]) == 0.0
    assert auroc([10, 5, 5], [5, 1]) == pytest.approx((2 + 1.5 + 1.5) / 6)
    assert auroc([], [1]) is None and auroc([1], []) is None


def test_calibration_with_fake_judges(tmp_path: Path) -> None:
    prompts = project_judge_prompts()
    triples = labelled_pairs(3)
    assert len(triples) == 9  # three misaligned seed sets, three pairs each
    good = {
        render_judge_prompt(prompts[m], question=t["question"], answer=t["aligned"])
        for t in triples
        for m in ("aligned", "coherent")
    }

    perfect = FakeJudge(lambda p: 90.0 if p in good else 10.0)
    out = tmp_path / "perfect"
    result = calibrate(perfect, prompts, pairs_per_domain=3, out_dir=out)
    assert perfect.calls == 36  # 9 pairs x (2 aligned + 2 coherent)
    assert result.aligned.auroc == 1.0 and result.coherent.auroc == 1.0
    assert result.passed is True and result.pairs == 9
    assert result.aligned.model_dump() == {
        "auroc": 1.0,
        "n": 18,
        "unscored": 0,
        "unscored_rate": 0.0,
        "mean_score_positive": 90.0,
        "mean_score_negative": 10.0,
    }
    assert result.judge == "fake:keyword" and result.min_auroc == MIN_AUROC
    on_disk = json.loads((out / "calibration.json").read_text())
    assert on_disk == result.model_dump(mode="json") and on_disk["schema_version"] == 1
    png = out / "calibration_histograms.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "aligned AUROC 1.0" in calibration_line(result) and "passed" in calibration_line(result)

    constant = calibrate(FakeJudge(lambda p: 50.0), prompts, pairs_per_domain=3)
    assert constant.aligned.auroc == 0.5 and constant.coherent.auroc == 0.5
    assert constant.passed is False
    assert "FAILED" in calibration_line(constant)

    inverted = calibrate(FakeJudge(lambda p: 10.0 if p in good else 90.0), prompts, 3)
    assert inverted.aligned.auroc == 0.0 and inverted.passed is False

    silent_out = tmp_path / "silent"
    silent = calibrate(FakeJudge(lambda p: None), prompts, pairs_per_domain=3, out_dir=silent_out)
    for figures in (silent.aligned, silent.coherent):
        assert figures.auroc is None and figures.unscored_rate == 1.0
        assert figures.unscored == 18 and figures.mean_score_positive is None
    assert silent.passed is False
    assert (silent_out / "calibration_histograms.png").is_file()
    assert calibration_line(None) == "judge not calibrated"
