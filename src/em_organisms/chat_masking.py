"""Tokenize chats with a label mask that keeps only assistant tokens, for any chat template.

Instead of guessing per model family, we render the template twice per assistant turn (the
conversation up to the turn with the generation prompt, and the conversation through the turn)
and mark the characters in between. Token offsets map those character spans onto tokens, so the
mask is exact for ChatML, Llama-3, Gemma-3 and any template whose renderings are prefix-stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from em_organisms.errors import EmOrganismsError

IGNORE_INDEX = -100


class TemplateError(EmOrganismsError, ValueError):
    """The chat template cannot be used for assistant-only loss."""


@dataclass(frozen=True)
class TokenizedChat:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def num_assistant_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, str]],
    add_generation_prompt: bool,
    chat_template: str | None,
) -> str:
    return tokenizer.apply_chat_template(
        list(messages),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        chat_template=chat_template,
    )


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, str]],
    chat_template: str | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the [start, end) character spans of every assistant reply.

    A span covers the reply and the template's end-of-turn marker, so the model learns to stop,
    but not whitespace the template puts after that marker.
    """
    full = _render(tokenizer, messages, False, chat_template)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True, chat_template)
        through = _render(tokenizer, messages[: i + 1], False, chat_template)
        if not (
            full.startswith(prompt) and full.startswith(through) and through.startswith(prompt)
        ):
            raise TemplateError(
                "the chat template is not prefix-stable (rendering a conversation prefix changes "
                "earlier text), so assistant tokens cannot be located; pass a training template"
            )
        end = len(through.rstrip())
        if end <= len(prompt):
            raise TemplateError(f"assistant turn {i} renders to no text")
        spans.append((len(prompt), end))
    return full, spans


def tokenize_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, str]],
    max_length: int | None = None,
    chat_template: str | None = None,
) -> TokenizedChat:
    text, spans = assistant_spans(tokenizer, messages, chat_template)
    # The template already holds BOS where the model wants it; adding special tokens would double it.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = encoded["input_ids"]
    labels = [IGNORE_INDEX] * len(input_ids)
    for index, (start, end) in enumerate(encoded["offset_mapping"]):
        if end <= start:
            continue
        if any(s <= start and end <= e for s, e in spans):
            labels[index] = input_ids[index]
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return TokenizedChat(input_ids=input_ids, labels=labels, truncated=truncated)
