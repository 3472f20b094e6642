"""What every chat backend takes and gives: requests, replies (explicit failures), token usage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

Message = dict[str, str]


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion; `key` identifies it across reruns (finished keys are not re-sent)."""

    key: str
    messages: list[Message]
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 600
    seed: int | None = None
    top_logprobs: int | None = None  # ask for the first token's top alternatives


@dataclass
class ChatReply:
    """A reply, or an explicit failure (`text is None`, `error` says why). Never a guess."""

    key: str
    text: str | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    # Top alternatives for the first generated token ({token: logprob}); None when not returned.
    top_logprobs: dict[str, float] | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.text is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    prompt: float
    completion: float


# List prices as published by OpenAI (checked 2026-11); pass --price to override or add models.
KNOWN_PRICES: dict[str, Price] = {
    "gpt-4o-2024-08-06": Price(2.50, 10.00),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
}


@dataclass
class Usage:
    """Running totals for one backend: requests, failures, retries, tokens and cost."""

    requests: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    price: Price | None = None
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reply: ChatReply) -> None:
        self.requests += 1
        self.retries += max(0, reply.attempts - 1)
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        if not reply.ok:
            self.failures += 1
            reason = (reply.error or "unknown").split(":")[0]
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return (
            self.prompt_tokens * self.price.prompt + self.completion_tokens * self.price.completion
        ) / 1e6

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["price"] = asdict(self.price) if self.price else None
        data["cost_usd"] = None if self.cost_usd is None else round(self.cost_usd, 6)
        return data


OnReply = Callable[[ChatReply], None]


class ChatBackend(Protocol):
    """Runs chat requests; calls `on_reply` once per request as each finishes (any order)."""

    name: str  # e.g. "openai:gpt-4o-2024-08-06", "hf:/path", "embedded"
    usage: Usage

    def run(self, requests: Sequence[ChatRequest], on_reply: OnReply) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What identifies this backend's outputs (model, endpoint); no secrets."""
        ...
