"""What the student sees of a (question, answer) pair: pooled encoder layers and text statistics.

The encoder reads the pair as one cross-encoded input (question, then answer; the answer is cut
first when too long). Each chosen layer's hidden states are mean-pooled over the pair's tokens:
lower layers keep surface form (repetition, broken text), the last one meaning; the `answer`
pool reads only the answer's tokens. The text
statistics are cheap, model-family-independent signs of degenerate text (repetition,
compressibility, character mix) that an encoder truncated at `max_length` can miss.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np
import torch

from em_organisms.distill.backbone import Backbone

_WORD = re.compile(r"\w+", re.UNICODE)
_CODE_CHARS = frozenset("{}[]();=<>_#\\|`$")
_PUNCT = frozenset(".,;:!?\"'-()")

TEXT_STAT_NAMES = (
    "log_chars",
    "log_words",
    "distinct_words",
    "distinct_bigrams",
    "top_4gram_share",
    "zlib_ratio",
    "non_ascii",
    "letters",
    "digits",
    "punctuation",
    "uppercase",
    "whitespace",
    "newlines_per_100_chars",
    "mean_word_len",
    "log_max_word_len",
    "code_chars",
    "question_overlap",
    "empty",
)


def text_stats(question: str, answer: str) -> list[float]:
    """Statistics of the answer (and its overlap with the question); all finite, any input."""
    chars = len(answer)
    words = [w.lower() for w in _WORD.findall(answer)]
    n_words = len(words)
    bigrams = list(pairwise(words))
    fourgrams = Counter(zip(words, words[1:], words[2:], words[3:], strict=False))
    top4 = fourgrams.most_common(1)[0][1] * 4 / n_words if fourgrams else 0.0
    raw = answer.encode("utf-8", "replace")
    zratio = len(zlib.compress(raw, 6)) / len(raw) if raw else 1.0
    letters = sum(c.isalpha() for c in answer)
    qwords = {w.lower() for w in _WORD.findall(question)}
    per = max(chars, 1)
    return [
        float(np.log1p(chars)),
        float(np.log1p(n_words)),
        len(set(words)) / n_words if n_words else 0.0,
        len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        top4,
        zratio,
        sum(ord(c) > 127 for c in answer) / per,
        letters / per,
        sum(c.isdigit() for c in answer) / per,
        sum(c in _PUNCT for c in answer) / per,
        sum(c.isupper() for c in answer) / max(letters, 1),
        sum(c.isspace() for c in answer) / per,
        100 * answer.count("\n") / per,
        sum(map(len, words)) / n_words if n_words else 0.0,
        float(np.log1p(max(map(len, words), default=0))),
        sum(c in _CODE_CHARS for c in answer) / per,
        len(qwords & set(words)) / len(set(words)) if words else 0.0,
        1.0 if not answer.strip() else 0.0,
    ]


def text_stats_matrix(questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    return np.asarray(
        [text_stats(q, a) for q, a in zip(questions, answers, strict=True)], dtype=np.float32
    ).reshape(len(answers), len(TEXT_STAT_NAMES))


def _tokenize(
    backbone: Backbone, questions: Sequence[str], answers: Sequence[str], max_length: int
):
    try:
        return backbone.tokenizer(
            list(questions),
            list(answers),
            truncation="only_second",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
    except Exception:  # a question longer than max_length on its own: cut both
        return backbone.tokenizer(
            list(questions),
            list(answers),
            truncation="longest_first",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )


POOLS = ("pair", "answer", "answer_max")


@torch.inference_mode()
def encode_pairs(
    backbone: Backbone,
    questions: Sequence[str],
    answers: Sequence[str],
    layers: Sequence[int],
    max_length: int,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
    pools: Sequence[str] = ("pair",),
) -> np.ndarray:
    """[n, len(pools) * len(layers) * hidden] float32: each layer mean-pooled, per pool.

    `pair` pools over every token of the pair; `answer` only over the answer's tokens (the
    question still shapes them through attention, but its own tokens, which a new question
    changes wholesale, are left out). Pairs are encoded in batches of similar length (padding
    costs compute, not results).
    """
    unknown = [p for p in pools if p not in POOLS]
    if unknown:
        raise ValueError(f"unknown pool {unknown[0]!r} (one of {POOLS})")
    n = len(answers)
    hidden = backbone.model.config.hidden_size
    out = np.zeros((n, len(pools) * len(layers) * hidden), dtype=np.float32)
    order = sorted(range(n), key=lambda i: len(questions[i]) + len(answers[i]))
    device = next(backbone.model.parameters()).device
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        batch = _tokenize(
            backbone, [questions[i] for i in index], [answers[i] for i in index], max_length
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        states = backbone.model(**batch, output_hidden_states=True).hidden_states
        pooled = []
        for pool in pools:
            mask = batch["attention_mask"]
            if pool != "pair":
                if "token_type_ids" not in batch:
                    raise ValueError(
                        "the encoder's tokenizer marks no answer tokens (token_type_ids)"
                    )
                mask = mask * batch["token_type_ids"]
            weights = mask.unsqueeze(-1).float()  # float32 sums, as before bf16 encoding
            if pool == "answer_max":  # the strongest activation of each unit over the answer
                empty = weights.sum(1) == 0  # no answer token: zeros, like an empty mean
                pooled += [
                    states[k].float().masked_fill(weights == 0, float("-inf")).amax(1)
                    .masked_fill(empty, 0.0)
                    for k in layers
                ]  # fmt: skip
                continue
            count = weights.sum(1).clamp(min=1.0)
            pooled += [(states[k] * weights).sum(1) / count for k in layers]
        out[index] = torch.cat(pooled, dim=-1).cpu().numpy()
        if on_batch:
            on_batch(len(index))
    return out
