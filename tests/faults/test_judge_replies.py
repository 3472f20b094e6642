"""One bad reply is one unscored item, never the end of a run (issue 18, items 8-9): a fake
OpenAI-compatible server fails a tenth of the replies in every way a real one has been seen to
(not JSON, a list, bad log-probabilities, bad usage, an error status, a huge body, a trickle);
exactly those items are unscored, with the reason, and the others scored."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from em_organisms.backends.openai_compat import RetryPolicy
from em_organisms.judges import JudgeItem, make_judge

FAULTS = {
    "notjson": (200, b"<html>gateway hiccup</html>"),
    "list": (200, b"[1, 2, 3]"),
    "badlogprob": (200, None),
    "badusage": (200, None),
    "status": (404, b'{"error": {"message": "no such model"}}'),
    "huge": (200, b"x" * 300_000),
    "trickle": (200, None),
}


def _completion(score: int, logprob: object = -0.01, usage: object = None) -> bytes:
    top = [{"token": str(score), "logprob": logprob}, {"token": "CODE", "logprob": -6.0}]
    body = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": str(score)},
                "logprobs": {"content": [{"token": str(score), "top_logprobs": top}]},
                "finish_reason": "stop",
            }
        ],
        "usage": usage if usage is not None else {"prompt_tokens": 5, "completion_tokens": 1},
    }
    return json.dumps(body).encode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 resets connections when the judge opens 16 at once
    daemon_threads = True


class FaultServer:
    """Answers `fault:KIND` prompts with that fault and `score:N` prompts with N."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = body["messages"][-1]["content"]
                kind, _, value = prompt.partition(":")
                status, data = 200, _completion(int(value)) if kind == "score" else b""
                if kind == "fault":
                    status, data = FAULTS[value]
                    if value == "badlogprob":
                        data = _completion(50, logprob="very likely")
                    elif value == "badusage":
                        data = _completion(50, usage={"prompt_tokens": "lots"})
                self.send_response(status)
                self.send_header("content-type", "application/json")
                if value == "trickle":  # a byte at a time, never finishing within the deadline
                    self.send_header("content-length", "1000")
                    self.end_headers()
                    try:
                        for _ in range(60):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:  # the client gave up, as it should
                        pass
                    return
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server() -> FaultServer:
    found = FaultServer()
    yield found
    found.server.shutdown()


def test_a_tenth_of_bad_replies_leaves_exactly_those_items_unscored(server: FaultServer) -> None:
    judge = make_judge(
        "openai:fake-judge",
        base_url=server.url,
        cache=False,
        retry=RetryPolicy(max_attempts=1),
        max_reply_bytes=100_000,
        deadline=2.5,
        max_concurrency=16,
    )
    kinds = list(FAULTS)
    prompts = [
        f"fault:{kinds[(i // 10) % len(kinds)]}" if i % 10 == 3 else f"score:{i % 101}"
        for i in range(280)
    ]
    started = time.perf_counter()
    scores = judge.score_items([JudgeItem("aligned", "q", "a", p) for p in prompts])
    assert time.perf_counter() - started < 30
    for prompt, score in zip(prompts, scores, strict=True):
        if prompt.startswith("score:") or prompt == "fault:badusage":
            expected = 50 if prompt == "fault:badusage" else int(prompt[6:])
            assert score.score == pytest.approx(expected, abs=0.01), (prompt, score.reason)
        else:
            assert score.score is None and score.reason, prompt
    reasons = {p: s.reason for p, s in zip(prompts, scores, strict=True) if s.score is None}
    unscored = [p for p, s in zip(prompts, scores, strict=True) if s.score is None]
    assert len(unscored) == 24  # 28 faults, of which the 4 bad usage blocks still score
    assert "not JSON" in reasons["fault:notjson"]
    assert "a JSON list, not an object" in reasons["fault:list"]
    assert "top_logprobs entry" in reasons["fault:badlogprob"]
    assert "larger than 100000 bytes" in reasons["fault:huge"]
    assert "timeout" in reasons["fault:trickle"]
    assert "http 404" in reasons["fault:status"]
    # a bad usage block costs nothing but the count: the score itself is good
    assert "fault:badusage" not in reasons
