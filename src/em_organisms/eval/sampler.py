"""`em-organisms sample`: answers to a question set from a base model and its organism.

Every sampling parameter is explicit and recorded in each row, with the protocol the samples
follow and the sha256 of the question set (see `generation`: nothing is inherited silently). All samples of a question go through batched `generate` calls with
each paraphrase tokenized once; base and organism share one copy of the weights (the adapter is
switched off for the base). Rows are appended batch by batch; a rerun skips finished batches.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from em_organisms import __version__
from em_organisms.errors import EmOrganismsError
from em_organisms.eval.engines import Engine, TransformersEngine
from em_organisms.eval.questions import Question, QuestionSet
from em_organisms.generation import SamplingParams, encode_conversation
from em_organisms.jsonl import append_jsonl, read_jsonl_resumable
from em_organisms.subjects import Subject

log = logging.getLogger(__name__)


class SampleError(EmOrganismsError, ValueError):
    pass


@dataclass(frozen=True)
class Job:
    """One generate call for one model: consecutive (question set, question, sample index)
    items; all samples of a question are contiguous, so a question is split only when its n
    exceeds the batch."""

    model: str  # "base" | "organism"
    items: tuple[tuple[str, Question, int], ...]

    @property
    def key(self) -> str:
        qset, question, index = self.items[0]
        return f"{self.model}:{qset}:{question.id}:{index}"


def paraphrase_choices(question: Question, n: int, seed: int) -> list[int]:
    """Which paraphrase each of the n samples asks: seeded, so reruns ask the same."""
    rng = random.Random(f"{seed}:{question.id}")
    return [rng.randrange(len(question.paraphrases)) for _ in range(n)]


def _protocol_identity(record: Mapping[str, Any] | None) -> tuple[str, int] | None:
    return None if not record else (record.get("name"), record.get("version"))


def _batch_seed(seed: int, job: Job) -> int:
    text = f"{seed}:{job.key}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


class Sampler:
    def __init__(
        self,
        subject: Subject,
        params: SamplingParams,
        samples_per_question: int,
        models: tuple[str, ...] = ("base", "organism"),
        batch_size: int | None = None,
        progress: bool = True,
        engine: Engine | None = None,
        protocol: Mapping[str, Any] | None = None,
    ) -> None:
        if "organism" in models and not subject.has_adapter:
            raise SampleError(f"{subject.name} has no adapter: sample it with models=('base',)")
        self.subject, self.params, self.n = subject, params, samples_per_question
        self.models = models
        self.engine = engine or TransformersEngine(subject)
        self.batch_size = batch_size or self.engine.default_batch_size(params.max_new_tokens)
        self.progress = progress
        self.protocol = dict(protocol) if protocol else None

    def _row_base(self) -> dict[str, Any]:
        return {
            "organism": self.subject.name,
            "base_model": self.subject.base_model,
            "adapter": self.subject.adapter,
            "recipe_sha256": self.subject.recipe_sha256,
            "generation": self.params.to_dict(),
            "engine": self.engine.name,
            "intervention": intervention.record()
            if (intervention := self.engine.intervention)
            else None,
            "protocol": self.protocol,
            "em_organisms_version": __version__,
        }

    def _jobs(self, sets: list[QuestionSet], done: set[tuple]) -> Iterator[Job]:
        """Fixed chunks of each model's (set, question, index) list: a rerun plans the same
        chunks, skips the finished ones and redoes a chunk cut short."""
        for model in self.models:
            items = [
                (q.name, question, i)
                for q in sets
                for question in q.questions
                for i in range(self.n)
            ]
            for start in range(0, len(items), self.batch_size):
                chunk = tuple(items[start : start + self.batch_size])
                if not all((model, qs, question.id, i) in done for qs, question, i in chunk):
                    yield Job(model, chunk)

    def _check_compatible(
        self, rows: list[dict[str, Any]], out: Path, sets: list[QuestionSet]
    ) -> None:
        """Refuse to continue a file whose rows were sampled otherwise: another organism,
        adapter, engine, sampling, protocol (name and version; its file's hash may change with
        edits that change no sample) or question-set text."""
        expected = self._row_base()
        expected["protocol"] = _protocol_identity(expected["protocol"])
        set_sha256 = {q.name: q.sha256 for q in sets}
        for number, row in enumerate(rows, start=1):
            for key in ("organism", "generation", "adapter", "engine", "protocol", "intervention"):
                # files from before engines were recorded were all written by transformers
                found = row.get(key, "transformers" if key == "engine" else None)
                if key == "protocol":
                    found = _protocol_identity(found)
                if found != expected[key]:
                    older = "protocol" not in row or "repetition_penalty" not in (
                        row.get("generation") or {}
                    )
                    why = (
                        " (the file predates recorded protocols and sampling: its rows may have "
                        "inherited the model's generation config, e.g. Qwen2.5's repetition "
                        "penalty 1.05)"
                        if older
                        else ""
                    )
                    raise SampleError(
                        f"{out}:{number}: {key} is {found!r} but this run uses "
                        f"{expected[key]!r}{why}; use another --out to sample with these settings"
                    )
            qset, sha = row.get("question_set"), row.get("question_set_sha256")
            if sha is not None and qset in set_sha256 and sha != set_sha256[qset]:
                raise SampleError(
                    f"{out}:{number}: question set {qset!r} had sha256 {sha[:12]}... when this row "
                    f"was sampled, {set_sha256[qset][:12]}... now (its file changed); use "
                    "another --out"
                )

    def run(self, sets: list[QuestionSet], out: Path, scale: float = 1.0) -> int:
        """Sample every (model, question, index) not yet in OUT; return rows written now."""
        existing = read_jsonl_resumable(out)
        self._check_compatible(existing, out, sets)
        done = {
            (r["model"], r["question_set"], r["question_id"], r["sample_index"]) for r in existing
        }
        jobs = list(self._jobs(sets, done))
        total = sum(len(j.items) for j in jobs)
        bar = tqdm(
            total=total, desc="sample", unit="ans", disable=not self.progress, dynamic_ncols=True
        )
        written = tokens = 0
        encoded: dict[tuple[str | None, str], list[int]] = {}
        choices: dict[tuple[str, str], list[int]] = {}
        tokenizer = self.subject.tokenizer
        set_sha256 = {q.name: q.sha256 for q in sets}
        try:
            for job in jobs:
                prompts, picked = [], []
                for qset, question, index in job.items:
                    if (qset, question.id) not in choices:
                        choices[qset, question.id] = paraphrase_choices(
                            question, self.n, self.params.seed
                        )
                    paraphrase = choices[qset, question.id][index]
                    text = question.paraphrases[paraphrase]
                    if (question.system, text) not in encoded:  # each prompt is tokenized once
                        head = (
                            [{"role": "system", "content": question.system}]
                            if question.system
                            else []
                        )
                        encoded[question.system, text] = encode_conversation(
                            tokenizer, [*head, {"role": "user", "content": text}]
                        )
                    prompts.append(encoded[question.system, text])
                    picked.append(paraphrase)
                params = SamplingParams(
                    **{**self.params.to_dict(), "seed": _batch_seed(self.params.seed, job)}
                )
                outputs = self.engine.generate(prompts, params, job.model, scale)
                rows = []
                for (qset, question, index), paraphrase, generated in zip(
                    job.items, picked, outputs, strict=True
                ):
                    rows.append(
                        {
                            **self._row_base(),
                            "model": job.model,
                            "adapter_scale": scale if job.model == "organism" else 0.0,
                            "question_set": qset,
                            "question_set_sha256": set_sha256[qset],
                            "question_id": question.id,
                            "paraphrase_index": paraphrase,
                            "paraphrase": question.paraphrases[paraphrase],
                            "system": question.system,
                            "sample_index": index,
                            "answer": generated.text,
                            "finish_reason": generated.finish_reason,
                            "completion_tokens": generated.completion_tokens,
                        }
                    )
                    tokens += generated.completion_tokens
                append_jsonl(out, rows)
                written += len(rows)
                bar.update(len(rows))
                bar.set_postfix(tok_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}")
        finally:
            bar.close()
        return written
