"""Chat backends behind one interface: OpenAI-compatible HTTP endpoints and in-process models.

BACKEND strings: `openai:MODEL` (with `--base-url`, key from the environment), `hf:PATH_OR_ID`,
`embedded` (the SmolLM2 model shipped in a wheel).
"""

from __future__ import annotations

from em_organisms import defaults
from em_organisms.backends.base import (
    KNOWN_PRICES,
    ChatBackend,
    ChatReply,
    ChatRequest,
    Price,
    Usage,
)
from em_organisms.backends.openai_compat import BackendConfigError, RetryPolicy

__all__ = [
    "KNOWN_PRICES",
    "BackendConfigError",
    "ChatBackend",
    "ChatReply",
    "ChatRequest",
    "Price",
    "RetryPolicy",
    "Usage",
    "make_backend",
    "parse_price",
]


def parse_price(text: str) -> Price:
    """'2.5,10' -> Price(prompt=2.5, completion=10.0), US dollars per million tokens."""
    try:
        prompt, completion = (float(x) for x in text.split(","))
    except ValueError:
        raise BackendConfigError(
            f"--price {text!r}: expected PROMPT,COMPLETION dollars per million tokens, e.g. 2.5,10"
        ) from None
    return Price(prompt, completion)


def make_backend(
    spec: str,
    *,
    base_url: str | None = None,
    api_key_env: str = defaults.API_KEY_ENV,
    max_concurrency: int = defaults.MAX_CONCURRENCY,
    timeout: float = 120.0,
    retry: RetryPolicy | None = None,
    price: Price | None = None,
    device: str | None = None,
    batch_size: int = 8,
    max_reply_bytes: int = defaults.MAX_REPLY_BYTES,
    deadline: float | None = None,
) -> ChatBackend:
    if spec.startswith("openai:") and len(spec) > len("openai:"):
        from em_organisms.backends.openai_compat import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            spec.removeprefix("openai:"),
            base_url=base_url,
            api_key_env=api_key_env,
            max_concurrency=max_concurrency,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            price=price,
            max_reply_bytes=max_reply_bytes,
            deadline=deadline,
        )
    if spec == "embedded" or (spec.startswith("hf:") and len(spec) > len("hf:")):
        from em_organisms.backends.local import LocalBackend

        return LocalBackend(spec.removeprefix("hf:"), batch_size=batch_size, device=device)
    raise BackendConfigError(
        f"unknown backend {spec!r}: use openai:MODEL, hf:PATH_OR_ID or embedded"
    )
