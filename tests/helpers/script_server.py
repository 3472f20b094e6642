"""A loopback OpenAI-compatible endpoint that answers from a script."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "sk-test-never-print-me-42"


def completion(text: str, logprobs: dict[str, float] | None = None) -> dict:
    choice: dict = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    }
    if logprobs is not None:
        top = [{"token": t, "logprob": lp} for t, lp in logprobs.items()]
        choice["logprobs"] = {"content": [{"token": text, "logprob": 0.0, "top_logprobs": top}]}
    return {"choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}


class ScriptServer:
    """Answers POST /v1/chat/completions from `script` (per request key in the user message)."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, dict, dict]]] = {}
        self.seen: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with outer.lock:
                    outer.seen.append({"auth": self.headers.get("authorization"), "body": body})
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    key = body["messages"][-1]["content"]
                    steps = outer.script.get(key) or [(200, {}, completion("default"))]
                    status, headers, payload = steps.pop(0) if len(steps) > 1 else steps[0]
                time.sleep(0.05)
                with outer.lock:
                    outer.in_flight -= 1
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
