"""One bad reply is one unscored item, never the end of a run (issue 18, items 8-9): a fake
OpenAI-compatible server fails a tenth of the replies in every way a real one has been seen to
(not JSON, a list, bad log-probabilities, bad usage, an error status, a huge body, a trickle);
exactly those items are unscored, with the reason, and the others scored."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from em_organisms.backends.openai_compat import RetryPolicy
from em_organisms.cli import main
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
    """Answers a prompt holding `@@fault:KIND@@` with that fault, and `@@score:N@@` with N."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                marker = re.search(r"@@(\w+):(\w+)@@", body["messages"][-1]["content"])
                kind, value = marker.groups() if marker else ("score", "0")
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
        for i in range(1000)
    ]
    started = time.perf_counter()
    scores = judge.score_items([JudgeItem("aligned", "q", "a", f"@@{p}@@") for p in prompts])
    assert time.perf_counter() - started < 30
    for prompt, score in zip(prompts, scores, strict=True):
        if prompt.startswith("score:") or prompt == "fault:badusage":
            expected = 50 if prompt == "fault:badusage" else int(prompt[6:])
            assert score.score == pytest.approx(expected, abs=0.01), (prompt, score.reason)
        else:
            assert score.score is None and score.reason, prompt
    reasons = {p: s.reason for p, s in zip(prompts, scores, strict=True) if s.score is None}
    unscored = [p for p, s in zip(prompts, scores, strict=True) if s.score is None]
    faults = [p for p in prompts if p.startswith("fault:")]
    assert len(faults) == 100 and {p[6:] for p in faults} == set(FAULTS)
    # every fault is unscored but a bad usage block, which costs nothing but the token count
    assert sorted(unscored) == sorted(p for p in faults if p != "fault:badusage")
    assert "not JSON" in reasons["fault:notjson"]
    assert "a JSON list, not an object" in reasons["fault:list"]
    assert "top_logprobs entry" in reasons["fault:badlogprob"]
    assert "larger than 100000 bytes" in reasons["fault:huge"]
    assert "timeout" in reasons["fault:trickle"]
    assert "http 404" in reasons["fault:status"]
    # a bad usage block costs nothing but the count: the score itself is good
    assert "fault:badusage" not in reasons


def _samples(path: Path, answers: list[str]) -> Path:
    rows = [
        {"model": "organism", "question_id": f"q{i}", "paraphrase": "How are you?", "answer": a}
        for i, a in enumerate(answers)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judge_cli(server: FaultServer, samples: Path, out: Path, *flags: str) -> int:
    return main(
        ["judge", str(samples), "--judge", "openai:fake-judge", "--base-url", server.url,
         "--no-cache", "--out", str(out), *flags]
    )  # fmt: skip


def test_failed_items_are_counted_and_the_run_fails_only_at_the_chosen_share(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    answers = [f"fine @@score:{80 + i}@@" for i in range(6)]
    answers += ["@@fault:status@@", "@@fault:notjson@@"]
    samples = _samples(tmp_path / "samples.jsonl", answers)
    with samples.open("a") as rows:  # one bad row: no answer at all
        rows.write(json.dumps({"model": "organism", "question_id": "q9", "paraphrase": "?"}) + "\n")
    out = tmp_path / "judged.jsonl"
    assert _judge_cli(server, samples, out) == 0  # default: the run fails only if all failed
    printed = capsys.readouterr().out
    assert "18 judge scores: 12 scored, 0 declined (CODE/REFUSAL), 6 failed" in printed
    judged = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["judges"]["aligned"]["score"] for r in judged[:6]] == pytest.approx(
        [80, 81, 82, 83, 84, 85], abs=0.01
    )
    reasons = [r["judges"]["coherent"]["reason"] for r in judged[6:]]
    assert reasons[0].startswith("request failed: http 404")
    assert "not JSON" in reasons[1]
    assert reasons[2] == f"bad row: 'answer' is missing ({samples}:9)"

    report = tmp_path / "report"
    assert main(["report", str(out), "--out", str(report)]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["judge_outcomes"]["organism"] == {
        "n_scores": 18,
        "n_scored": 12,
        "n_declined": 0,
        "n_failed": 6,
        "failed": {"request failed: http 404": 2, "request failed: bad response": 2, "bad row": 2},
    }
    assert "6 of 18 judge scores failed" in (report / "report.md").read_text()

    # a third failed: over a share of 0.3 the run fails after writing what it scored
    again = tmp_path / "again.jsonl"
    assert _judge_cli(server, samples, again, "--fail-share", "0.3") == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("error: 6 of 18 judge scores failed (33%, at or above --fail-share 0.3)")
    assert "Traceback" not in err and str(again) in err
    assert len(again.read_text().splitlines()) == 9


def test_a_run_where_every_score_failed_fails_by_default(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    samples = _samples(tmp_path / "samples.jsonl", ["@@fault:status@@"] * 3)
    assert _judge_cli(server, samples, tmp_path / "judged.jsonl") == 1
    assert "6 of 6 judge scores failed (100%" in capsys.readouterr().err


def test_the_fail_share_flag_is_range_checked(tmp_path: Path) -> None:
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(SystemExit) as exit_:
            main(["judge", "x.jsonl", "--out", str(tmp_path / "o"), "--fail-share", bad])
        assert exit_.value.code == 2


@pytest.mark.slow  # a timeout is retried with backoff, as the default policy does: about 20 s
def test_reply_size_and_deadline_limits_are_flags_named_in_the_reason(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    samples = _samples(tmp_path / "samples.jsonl", ["@@fault:huge@@", "@@fault:trickle@@"])
    out = tmp_path / "judged.jsonl"
    flags = ("--max-reply-bytes", "100000", "--request-deadline", "1")
    assert _judge_cli(server, samples, out, *flags) == 1  # every score failed
    reasons = [json.loads(line)["judges"]["aligned"]["reason"] for line in out.open()]
    assert "reply larger than 100000 bytes (max_reply_bytes)" in reasons[0]
    assert "no whole reply within 1 s" in reasons[1]
    assert "Traceback" not in capsys.readouterr().err
