"""A judge computed from an in-process model's own distribution over the answers 0..100.

For each number k the probability that the reply *is* k: the product of the probabilities of
k's tokens, times the probability that no further digit follows (so "8" is not credited with
the mass of "85"). Score = sum(k * p_k) / sum(p_k); unscored when sum(p_k) < 0.25, as for the
log-probability judge.

The prompt is run once. The candidates' prefixes then form a trie (one node per distinct prefix,
so "1", "10" and "100" are one path), and its nodes are fed after the prompt as one flat sequence
("tree attention"): each node sits at the position its token would have after the prompt, and a
4-D additive attention mask lets it see the whole prompt and its own ancestors only. Its logits
are then those of the prompt followed by its prefix (up to float rounding), from one cache that
is never copied; the nodes go in chunks of `chunk_size`, each chunk's keys joining the cache. The
mask is passed to the model as it is, which the "eager" and "sdpa" attention implementations
honour (flash attention does not; sliding-window layers would ignore their window, which only
matters for prompts longer than it).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from em_organisms.generation import encode_conversation
from em_organisms.judges.scores import MIN_MASS, Score, checked

MAX_NUMBER = 100
TREE_ATTENTION = frozenset({"eager", "sdpa"})


@lru_cache(maxsize=4)
def _digit_start_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Ids of tokens whose text starts with a digit: they would continue a number."""
    ids = [i for i in range(len(tokenizer)) if tokenizer.decode([i])[:1].isdigit()]
    return torch.tensor(ids, dtype=torch.long)


class NumberDistributionJudge:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        chunk_size: int = 256,
    ) -> None:
        if model.config._attn_implementation not in TREE_ATTENTION:
            raise ValueError(
                f"the distribution judge needs {' or '.join(sorted(TREE_ATTENTION))} attention "
                f"(it passes a 4-D mask), not {model.config._attn_implementation!r}"
            )
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.chunk_size = chunk_size
        self.candidates = {
            k: tuple(tokenizer.encode(str(k), add_special_tokens=False))
            for k in range(MAX_NUMBER + 1)
        }
        self._digits = _digit_start_ids(tokenizer)
        # The trie: every distinct non-empty prefix of a candidate, sorted (parents first).
        self._nodes = sorted(
            {c[:end] for c in self.candidates.values() for end in range(1, len(c) + 1)}
        )
        index = {p: i for i, p in enumerate(self._nodes)}
        self._sees = torch.zeros((len(self._nodes), len(self._nodes)), dtype=torch.bool)
        for i, p in enumerate(self._nodes):
            self._sees[i, [index[p[:end]] for end in range(1, len(p) + 1)]] = True

    def describe(self) -> dict[str, str]:
        return {"backend": "transformers", "model": self.name, "method": "distribution"}

    @torch.inference_mode()
    def _next_token_logprobs(self, prompt: list[int]) -> dict[tuple[int, ...], torch.Tensor]:
        """Log-probabilities of the next token after the prompt and after every candidate prefix."""
        model = self.model
        device, n, length = model.device, len(self._nodes), len(prompt)
        # The prompt: its cache, and the logits at its last position only (the LM head over every
        # prompt position would cost a quarter of the pass on a small model).
        out = model(
            input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1
        )
        cache = out.cache
        dists = {(): torch.log_softmax(out.logits[0, -1].float(), dim=-1)}
        tokens = torch.tensor([p[-1] for p in self._nodes], device=device)
        positions = torch.tensor([length + len(p) - 1 for p in self._nodes], device=device)
        blocked = torch.finfo(model.dtype).min
        # Row i: the whole prompt, then node i's ancestors and itself among the nodes.
        mask = torch.zeros((n, length + n), dtype=model.dtype, device=device)
        mask[:, length:].masked_fill_(~self._sees.to(device), blocked)
        # Nodes are fed in chunks; each chunk's keys join the cache, so later chunks still see
        # their ancestors (nodes are sorted, so an ancestor always comes first).
        for start in range(0, n, self.chunk_size):
            stop = min(start + self.chunk_size, n)
            logits = model(
                input_ids=tokens[None, start:stop],
                position_ids=positions[None, start:stop],
                attention_mask=mask[None, None, start:stop, : length + stop],
                cache=cache,
                use_cache=True,
            ).logits
            rows = torch.log_softmax(logits[0].float(), dim=-1)
            for prefix, row in zip(self._nodes[start:stop], rows, strict=True):
                dists[prefix] = row
        return dists

    def score_prompt(self, prompt_text: str) -> Score:
        prompt = encode_conversation(self.tokenizer, [{"role": "user", "content": prompt_text}])
        dists = self._next_token_logprobs(prompt)
        probs: dict[int, float] = {}
        for number, tokens in self.candidates.items():
            logp = sum(float(dists[tokens[:i]][t]) for i, t in enumerate(tokens))
            continues = float(
                torch.logsumexp(dists[tokens][self._digits.to(dists[tokens].device)], 0)
            )
            probs[number] = math.exp(logp) * max(0.0, 1.0 - math.exp(continues))
        mass = sum(probs.values())
        top = max(probs, key=probs.__getitem__)
        raw = f"most likely {top} (p={probs[top]:.3f})"
        if mass < MIN_MASS:
            return Score(
                None, "distribution", mass, raw, f"probability on numbers {mass:.4g} < {MIN_MASS}"
            )
        return checked(
            Score(sum(k * p for k, p in probs.items()) / mass, "distribution", mass, raw)
        )
