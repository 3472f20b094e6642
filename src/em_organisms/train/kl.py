"""KL-regularised organisms (`protocol.kl`): weight x KL(organism || base) added to the SFT loss.

What is computed, once per optimizer step:

- a batch of `batch_size` reference conversations from an out-of-domain prompt set, in a seeded
  order that depends only on the seed and the global step (a resumed run draws the same batches);
  a prompt is rendered with the chat template as one user turn plus the generation prompt, so
  its last position is the distribution of the answer's first token;
- the base distribution q: the same model under `disable_adapter()` and `torch.no_grad()`, no
  second copy of the weights; the organism distribution p: the same forward with the adapter on,
  with gradients;
- KL = sum over the batch's non-padding positions t of sum_v p_t(v) (log p_t(v) - log q_t(v)),
  divided by the number of those positions: the mean next-token KL per reference token.

On the fast path (`assistant_token_loss`'s architectures) the LM head runs in row chunks and
the gradient w.r.t. the organism's hidden states, p * (log p - log q - KL_t) through the head, is
computed in the forward pass, as the cross-entropy's is: the [tokens, vocab] logits never exist
all at once. Elsewhere the model's own logits are used.

With several processes every process computes the KL of the same reference batch, so its
gradient is the same on all of them and the mean over processes leaves it unchanged: N processes
learn what one process with N times the SFT batch learns.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedTokenizerBase

from em_organisms.errors import EmOrganismsError
from em_organisms.jsonl import read_jsonl
from em_organisms.recipes import KLSpec
from em_organisms.train.head_grad import GradientInForward
from em_organisms.yaml_files import YamlError, load_yaml_file

REFERENCE_DIR = "reference_prompts"
Conversation = list[dict[str, str]]


class KLError(EmOrganismsError, ValueError):
    """A `protocol.kl` section that cannot be used, with what to change."""


def reference_set_names() -> list[str]:
    from em_organisms.resources import RESOURCES

    return sorted(p.stem for p in (RESOURCES / REFERENCE_DIR).glob("*.yaml"))


def _resolve(spec: str, base_dir: Path | None) -> Path:
    from em_organisms.resources import RESOURCES

    if "/" not in spec and not spec.endswith((".yaml", ".yml", ".jsonl")):
        path = RESOURCES / REFERENCE_DIR / f"{spec}.yaml"
        if path.is_file():
            return path
        raise KLError(
            f"protocol.kl.prompts: no built-in reference prompt set {spec!r} (built-in: "
            f"{', '.join(reference_set_names())}); or give a .yaml or .jsonl file"
        )
    candidates = [Path(spec).expanduser()]
    if not candidates[0].is_absolute():
        candidates += [d / spec for d in (base_dir, RESOURCES) if d is not None]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(c) for c in candidates)
    raise KLError(f"protocol.kl.prompts: {spec}: file not found (tried {tried})")


def _conversations(item: Any, where: str) -> list[Conversation]:
    """One item of a prompt file: a string (a user message), {prompt: str}, {messages: [...]}
    (a chat, assistant turns included) or a question-file item ({paraphrases: [...], system})."""
    if isinstance(item, str):
        item = {"prompt": item}
    if not isinstance(item, dict):
        raise KLError(f"{where}: expected a prompt string or a mapping, got {type(item).__name__}")
    system = item.get("system")
    head = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    if "messages" in item:
        messages = item["messages"]
        ok = isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )  # fmt: skip
        if not ok:
            raise KLError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        return [[{"role": m["role"], "content": m["content"]} for m in messages]]
    prompts = item.get("paraphrases", [item.get("prompt")])
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise KLError(f"{where}: needs 'prompt' (text), 'paraphrases' (texts) or 'messages'")
    return [[*head, {"role": "user", "content": p}] for p in prompts]


def load_reference_conversations(spec: str, base_dir: Path | None = None) -> list[Conversation]:
    """Every reference conversation of a prompt set: a built-in name, or a YAML list / JSONL
    file (a relative path is looked for under the current folder, BASE_DIR, then the package)."""
    path = _resolve(spec, base_dir)
    try:
        items = read_jsonl(path) if path.suffix == ".jsonl" else load_yaml_file(path)
    except (YamlError, EmOrganismsError) as err:
        raise KLError(f"protocol.kl.prompts: {err}") from None
    if items is None:
        items = []
    if not isinstance(items, list):
        raise KLError(f"{path}: a reference prompt file is a list, got {type(items).__name__}")
    found = [
        c
        for i, item in enumerate(items, start=1)
        for c in _conversations(item, f"{path}: item {i}")
    ]
    if not found:
        raise KLError(f"protocol.kl.prompts: {path} holds no prompts")
    return found


def tokenize_reference(
    conversations: list[Conversation], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[list[int]]:
    """Token ids of each conversation under the chat template (a conversation that does not
    end with an assistant turn gets the generation prompt), cut to MAX_LENGTH tokens."""
    rows = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=messages[-1]["role"] != "assistant"
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        if ids:
            rows.append(ids)
    if not rows:
        raise KLError("protocol.kl.prompts: every reference prompt rendered to no tokens")
    return rows


def reference_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The rows of the reference batch at optimizer step STEP (0-based): consecutive slices of
    an endless stream of seeded permutations of range(n), one permutation per pass."""
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        cycle, offset = divmod(position, n)
        order = list(range(n))
        random.Random(f"kl-reference:{seed}:{cycle}").shuffle(order)
        out.append(order[offset])
    return out


class _HeadKL(GradientInForward):
    """Summed KL(softmax(h W^T) || softmax(h_base W^T)) over rows, in row chunks; the gradient
    w.r.t. `hidden` is computed in the forward pass. `base` and the head get no gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        base: torch.Tensor,
        weight: torch.Tensor,
        softcap: float,
        chunk: int,
    ) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        for start in range(0, hidden.shape[0], chunk):
            logits = (hidden[start : start + chunk] @ weight.T).float()
            base_logits = (base[start : start + chunk] @ weight.T).float()
            capped = None
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
                base_logits = torch.tanh(base_logits / softcap) * softcap
            log_p = torch.log_softmax(logits, dim=-1)
            diff = log_p - torch.log_softmax(base_logits, dim=-1)
            p = log_p.exp_()
            row_kl = (p * diff).sum(dim=-1)
            total += row_kl.sum()
            grad = diff.sub_(row_kl[:, None]).mul_(p)  # d KL_t / d logits = p (log p/q - KL_t)
            if capped is not None:
                grad *= 1.0 - capped.square()
            grad_hidden[start : start + chunk] = (grad.to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.save_for_backward(grad_hidden)
        return total


def peft_model(model: nn.Module) -> PeftModel:
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(inner, PeftModel):
        raise KLError("protocol.kl needs a LoRA model: the base is the model with its adapter off")
    return inner


def kl_divergence(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    fast: bool = True,
    chunk: int = 256,
) -> torch.Tensor:
    """Mean over non-padding positions of KL(organism || base) of the next-token distributions;
    differentiable w.r.t. the adapter. The base is the same model with the adapter switched off."""
    from em_organisms.train.trainer import causal_lm

    peft = peft_model(model)
    keep = attention_mask.bool()
    count = keep.sum().clamp(min=1)
    if not fast:
        with torch.no_grad(), peft.disable_adapter():
            base = peft(input_ids=input_ids, attention_mask=attention_mask).logits[keep]
        logits = peft(input_ids=input_ids, attention_mask=attention_mask).logits[keep]
        log_p = F.log_softmax(logits.float(), dim=-1)
        log_q = F.log_softmax(base.float(), dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum() / count
    lm = causal_lm(peft)
    backbone = getattr(lm, lm.base_model_prefix)
    with torch.no_grad(), peft.disable_adapter():
        base = backbone(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state[keep]
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state[keep]
    head = lm.get_output_embeddings()
    softcap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None) or 0.0
    weight = head.weight
    if head.weight.requires_grad or head.bias is not None:
        return kl_from_logits(head(hidden), head(base), softcap) / count
    if torch.is_autocast_enabled(hidden.device.type):
        weight = weight.to(torch.get_autocast_dtype(hidden.device.type))
    total = _HeadKL.apply(hidden, base.to(hidden.dtype), weight, float(softcap), chunk)
    return total / count


def kl_from_logits(logits: torch.Tensor, base: torch.Tensor, softcap: float = 0.0) -> torch.Tensor:
    """Summed KL(softmax(logits) || softmax(base)) over rows (plain autograd)."""
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
        base = torch.tanh(base / softcap) * softcap
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_q = F.log_softmax(base.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum()


class KLRegulariser:
    """The reference rows of one run and the KL term of each optimizer step."""

    def __init__(self, spec: KLSpec, rows: list[list[int]], pad_id: int, seed: int) -> None:
        self.spec = spec
        self.weight = spec.weight
        self.rows = rows
        self.pad_id = pad_id
        self.seed = seed

    @classmethod
    def from_spec(
        cls,
        spec: KLSpec,
        tokenizer: PreTrainedTokenizerBase,
        seed: int,
        base_dir: Path | None = None,
    ) -> KLRegulariser:
        conversations = load_reference_conversations(spec.prompts, base_dir)
        rows = tokenize_reference(conversations, tokenizer, spec.max_length)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(spec, rows, pad, seed)

    def batch(self, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded input ids and attention mask of the reference batch at STEP."""
        picked = [
            self.rows[i]
            for i in reference_indices(len(self.rows), self.spec.batch_size, step, self.seed)
        ]
        width = max(len(r) for r in picked)
        ids = torch.full((len(picked), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(picked), width), dtype=torch.long)
        for i, row in enumerate(picked):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(device), mask.to(device)

    def divergence(self, model: nn.Module, step: int, fast: bool = True) -> torch.Tensor:
        device = next(p for p in model.parameters()).device
        input_ids, attention_mask = self.batch(step, device)
        return kl_divergence(model, input_ids, attention_mask, fast=fast)
