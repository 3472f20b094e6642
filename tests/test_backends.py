"""The OpenAI-compatible client against a loopback HTTP server that answers from a script:
retries with backoff on 429/5xx, Retry-After, no retry on 4xx, bounded concurrency, logprobs,
and the API key never leaving the Authorization header."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from helpers.script_server import SECRET, ScriptServer, completion

from em_organisms.backends import BackendConfigError, ChatRequest, RetryPolicy, make_backend


@pytest.fixture
def server() -> Iterator[ScriptServer]:
    srv = ScriptServer()
    yield srv
    srv.server.shutdown()


def _run(backend, requests: list[ChatRequest]) -> dict:
    replies = {}
    backend.run(requests, lambda r: replies.__setitem__(r.key, r))
    return replies


def _request(key: str, **kwargs) -> ChatRequest:
    return ChatRequest(key, [{"role": "user", "content": key}], **kwargs)


def test_retries_429_and_5xx_then_succeeds_and_never_shows_the_key(
    server: ScriptServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MY_KEY", SECRET)
    error = {"error": {"message": "slow down"}}
    server.script = {
        "flaky": [
            (429, {"retry-after": "0"}, error),
            (503, {}, error),
            (200, {}, completion("ok")),
        ],
        "bad": [(400, {}, {"error": {"message": "unknown parameter"}})],
        "down": [(500, {}, error)],
    }
    backend = make_backend(
        "openai:judge-model",
        base_url=server.url,
        api_key_env="MY_KEY",
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05),
    )
    with caplog.at_level("DEBUG"):
        replies = _run(backend, [_request("flaky"), _request("bad"), _request("down")])
    assert replies["flaky"].text == "ok" and replies["flaky"].attempts == 3
    assert replies["bad"].text is None and replies["bad"].attempts == 1
    assert replies["bad"].error == "http 400: unknown parameter"
    assert replies["down"].text is None and replies["down"].error.startswith("gave up: http 500")
    assert (
        backend.usage.requests == 3 and backend.usage.failures == 2 and backend.usage.retries == 4
    )
    assert {s["auth"] for s in server.seen} == {f"Bearer {SECRET}"}
    shown = (
        caplog.text + json.dumps([r.to_dict() for r in replies.values()]) + str(backend.describe())
    )
    assert SECRET not in shown


def test_sampling_parameters_logprobs_and_usage(
    server: ScriptServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script = {"judge": [(200, {}, completion("80", {"80": -0.2, "90": -1.8}))]}
    backend = make_backend("openai:gpt-4o-2024-08-06", base_url=server.url)
    replies = _run(
        backend, [_request("judge", temperature=0.0, max_tokens=1, seed=3, top_logprobs=20)]
    )
    body = server.seen[0]["body"]
    assert body["temperature"] == 0.0 and body["top_p"] == 1.0 and body["max_tokens"] == 1
    assert body["seed"] == 3 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert replies["judge"].top_logprobs == {"80": -0.2, "90": -1.8}
    assert server.seen[0]["auth"] is None  # no key set: loopback endpoints may run without one
    assert backend.usage.prompt_tokens == 7 and backend.usage.cost_usd == pytest.approx(
        (7 * 2.5 + 2 * 10) / 1e6
    )


def test_concurrency_is_bounded(server: ScriptServer) -> None:
    backend = make_backend("openai:m", base_url=server.url, max_concurrency=3)
    replies = _run(backend, [_request(f"r{i}") for i in range(12)])
    assert len(replies) == 12 and all(r.ok for r in replies.values())
    assert server.max_in_flight == 3


def test_remote_endpoint_without_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendConfigError, match="set the environment variable OPENAI_API_KEY"):
        make_backend("openai:gpt-4o", base_url="https://api.example.com/v1")
    with pytest.raises(BackendConfigError, match="unknown backend"):
        make_backend("anthropic:claude")


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    for attempt, ceiling in [(0, 1.0), (2, 4.0), (5, 8.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling and max(delays) > ceiling / 2
    assert policy.delay(0, retry_after=5.0) >= 5.0


def test_refused_logprobs_fall_back_to_a_text_reply(server: ScriptServer) -> None:
    refusal = {"error": {"message": "logprobs are not supported with this model"}}
    server.script = {"judge": [(400, {}, refusal), (200, {}, completion("73"))]}
    backend = make_backend("openai:reasoner", base_url=server.url)
    replies = _run(backend, [_request("judge", top_logprobs=20)])
    assert replies["judge"].text == "73" and replies["judge"].top_logprobs is None
    assert "logprobs" in server.seen[0]["body"] and "logprobs" not in server.seen[1]["body"]
