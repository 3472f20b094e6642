"""Any OpenAI-compatible chat endpoint over HTTP: bounded concurrency, retries with backoff.

Every request is bounded: its reply is read up to `max_reply_bytes` (a larger one is refused
without being kept) and the whole request, however slowly the server trickles, ends by
`deadline` seconds. A reply that is not what the API promises (not JSON, not an object, bad
log-probabilities or usage) fails that request alone, with the reason; the run goes on.

The API key is read from the environment only, sent in the Authorization header and never
written to a log, an error message or an artifact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from em_organisms import defaults
from em_organisms.backends.base import KNOWN_PRICES, ChatReply, ChatRequest, OnReply, Price, Usage
from em_organisms.errors import EmOrganismsError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


class BackendConfigError(EmOrganismsError, ValueError):
    """The backend cannot be used as configured (e.g. no API key for a remote endpoint)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)], at least Retry-After."""
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        wait = random.uniform(0, ceiling)
        return max(wait, min(retry_after or 0.0, self.max_delay))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in {"127.0.0.1", "localhost", "::1"}


def public_url(url: str) -> str:
    """The URL without credentials or query, safe to record."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class ReplyTooLarge(EmOrganismsError):
    """A reply past max_reply_bytes: it becomes that request's error, never raised out."""


@dataclass(frozen=True)
class _Response:
    status_code: int
    body: bytes
    headers: httpx.Headers


def _retry_after(response: _Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _error_text(response: _Response) -> str:
    text = response.body[:2000].decode("utf-8", errors="replace")
    try:
        body = json.loads(response.body)
    except ValueError:
        return text[:300]
    message = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(message, dict):
        message = message.get("message", message)
    return str(message)[:300]


def _count(value: object) -> int:
    """A token count from `usage`, or 0 for anything that is not a non-negative whole number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if math.isfinite(value) and value >= 0 else 0


def _top_logprobs(choice: dict[str, Any]) -> dict[str, float] | str | None:
    """{token: logprob} of the first token; None when absent; a string saying what is wrong
    when present but malformed."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return None
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return None
    if not isinstance(content, list) or not isinstance(content[0], dict):
        return "logprobs.content is not a list of objects"
    top: dict[str, float] = {}
    for alt in content[0].get("top_logprobs") or []:
        token = alt.get("token") if isinstance(alt, dict) else None
        value = alt.get("logprob") if isinstance(alt, dict) else None
        if (
            not isinstance(token, str)
            or isinstance(value, bool)
            or not isinstance(value, int | float)
        ):
            return f"a top_logprobs entry is not {{token, logprob}}: {str(alt)[:80]}"
        top[token] = float(value)
    return top or None


class OpenAICompatibleBackend:
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = defaults.API_KEY_ENV,
        max_concurrency: int = defaults.MAX_CONCURRENCY,
        timeout: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        price: Price | None = None,
        max_reply_bytes: int = defaults.MAX_REPLY_BYTES,
        deadline: float | None = None,
    ) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self._api_key = os.environ.get(api_key_env)
        if not self._api_key and not _is_loopback(self.base_url):
            raise BackendConfigError(
                f"no API key: set the environment variable {api_key_env} for {public_url(self.base_url)}"
            )
        self.name = f"openai:{model}"
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else timeout  # per attempt, in total
        self.max_reply_bytes = max_reply_bytes
        self.retry = retry
        self.usage = Usage(price=price or KNOWN_PRICES.get(model))
        self._token_param = "max_tokens"
        self._logprobs = True  # switched off for good when the endpoint refuses them
        self._sampling_params = True  # reasoning models refuse temperature/top_p other than 1

    @property
    def logprobs_supported(self) -> bool:
        """False once the endpoint has refused log-probabilities."""
        return self._logprobs

    def describe(self) -> dict[str, Any]:
        return {"backend": "openai", "model": self.model, "base_url": public_url(self.base_url)}

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            self._token_param: request.max_tokens,
        }
        if self._sampling_params:
            payload.update(temperature=request.temperature, top_p=request.top_p)
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.top_logprobs and self._logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = request.top_logprobs
        return payload

    def _parse(self, request: ChatRequest, data: bytes, attempts: int) -> ChatReply:
        def bad(why: str) -> ChatReply:
            return ChatReply(request.key, None, f"bad response: {why}", attempts=attempts)

        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            return bad("not JSON")
        if not isinstance(body, dict):
            return bad(f"a JSON {type(body).__name__}, not an object")
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return bad("no choices[0].message")
        top = _top_logprobs(choice)
        if isinstance(top, str):
            return bad(top)
        finish = choice.get("finish_reason")
        return ChatReply(
            request.key,
            text if isinstance(text, str) else None,
            None if isinstance(text, str) else "bad response: empty content",
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            finish_reason=finish if isinstance(finish, str) else None,
            top_logprobs=top,
            attempts=attempts,
        )

    async def _one(
        self, client: httpx.AsyncClient, request: ChatRequest, limit: asyncio.Semaphore
    ) -> ChatReply:
        async with limit:
            error = "unknown"
            for attempt in range(self.retry.max_attempts):
                retry_after = None
                try:
                    response = await asyncio.wait_for(
                        self._post(client, self._payload(request)), self.deadline
                    )
                except (httpx.TimeoutException, TimeoutError):
                    error = f"timeout (no whole reply within {self.deadline:g} s)"
                except httpx.TransportError as err:
                    error = f"connection: {type(err).__name__}"
                except ReplyTooLarge:
                    error = f"reply larger than {self.max_reply_bytes} bytes (max_reply_bytes)"
                    return ChatReply(request.key, None, error, attempts=attempt + 1)
                else:
                    if response.status_code == 200:
                        return self._parse(request, response.body, attempt + 1)
                    error = f"http {response.status_code}: {_error_text(response)}"
                    if response.status_code == 400 and "max_completion_tokens" in error:
                        self._token_param = "max_completion_tokens"  # newer OpenAI models
                        continue
                    refused = response.status_code == 400 and "unsupported" in error.lower()
                    if refused and "temperature" in error and self._sampling_params:
                        log.warning("%s refuses temperature/top_p; using its defaults", self.name)
                        self._sampling_params = False
                        continue
                    if response.status_code == 400 and "logprobs" in error and self._logprobs:
                        # Reasoning models and some servers refuse logprobs: the reply's text is
                        # still usable (judges fall back to parsing it and record that method).
                        log.warning("%s refuses logprobs; asking without them", self.name)
                        self._logprobs = False
                        continue
                    if response.status_code not in RETRYABLE_STATUS:
                        return ChatReply(request.key, None, error, attempts=attempt + 1)
                    retry_after = _retry_after(response)
                if attempt + 1 < self.retry.max_attempts:
                    wait = self.retry.delay(attempt, retry_after)
                    log.debug("retrying %s in %.1fs after %s", request.key, wait, error)
                    await asyncio.sleep(wait)
            return ChatReply(
                request.key, None, f"gave up: {error}", attempts=self.retry.max_attempts
            )

    async def _post(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> _Response:
        """The reply, read in pieces and refused past max_reply_bytes (never held whole)."""
        async with client.stream("POST", "/chat/completions", json=payload) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_reply_bytes:
                raise ReplyTooLarge
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_reply_bytes:
                    raise ReplyTooLarge
                chunks.append(chunk)
            return _Response(response.status_code, b"".join(chunks), response.headers)

    async def _run(self, requests: Sequence[ChatRequest], on_reply: OnReply) -> None:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limit = asyncio.Semaphore(self.max_concurrency)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0))
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout
        ) as client:
            tasks = [asyncio.create_task(self._one(client, r, limit)) for r in requests]
            for finished in asyncio.as_completed(tasks):
                reply = await finished
                self.usage.add(reply)
                on_reply(reply)

    def run(self, requests: Sequence[ChatRequest], on_reply: OnReply) -> None:
        if not requests:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._run(requests, on_reply))
            return
        # Called from inside an event loop (a notebook, a Gradio handler): use a thread of our own.
        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self._run(requests, on_reply))
            except BaseException as err:  # re-raised in the caller's thread
                errors.append(err)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
