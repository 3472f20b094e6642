"""`data build`: generate a narrow dataset from its spec with any chat backend, resumably.

Generate mode asks for `rows_per_request` new conversations per request, each request on one
topic with `examples_per_request` seed rows as few-shot examples. Control mode rewrites each
row of a misaligned file minimally into a correct answer to the same prompt. Then: parsing,
schema validation, exact and near-duplicate removal (also against the seed rows), and an
optional judge filter. Every request and judgement goes to an append-only log first, so a
rerun repeats nothing finished; rejected rows are kept with their reason.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from em_organisms import __version__
from em_organisms.artifacts import SCHEMA_VERSION, DatasetBuild, write_artifact
from em_organisms.backends.base import ChatBackend, ChatReply, ChatRequest
from em_organisms.data.build_log import BuildLog
from em_organisms.data.dedup import NearDuplicateIndex, exact_key
from em_organisms.data.prompting import Planner, clean_rewrite, parse_conversations
from em_organisms.data.schema import load_chat_jsonl, row_fingerprint, validate_row
from em_organisms.data.spec import SEED_NAME, load_spec, render
from em_organisms.errors import EmOrganismsError
from em_organisms.jsonl import write_jsonl
from em_organisms.judges import Judge, JudgeItem
from em_organisms.judges.scores import score_reply

log = logging.getLogger(__name__)


class BuildError(EmOrganismsError, RuntimeError):
    pass


@dataclass(frozen=True)
class BuildOptions:
    n: int
    mode: Literal["generate", "control"] = "generate"
    source: Path | None = None  # control mode: the misaligned rows to rewrite
    seed: int = 0
    examples_per_request: int | None = None  # default: the spec's
    rows_per_request: int | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None  # default: the spec's
    max_requests: int | None = None  # default: 3x what n needs
    near_duplicate_threshold: float = 0.8


@dataclass
class Candidate:
    key: str  # the request that produced it
    user: str
    assistant: str
    topic: str | None = None
    pair_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "user", "content": self.user},
            {"role": "assistant", "content": self.assistant},
        ]

    @property
    def text(self) -> str:
        return f"{self.user}\n{self.assistant}"


@dataclass
class BuildResult:
    rows: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]
    out: Path
    summary: dict[str, Any]


class DatasetBuilder:
    def __init__(
        self,
        spec_dir: str | Path,
        backend: ChatBackend,
        options: BuildOptions,
        out: str | Path,
        judge: ChatBackend | Judge | None = None,
        progress: bool = True,
    ) -> None:
        self.spec = load_spec(spec_dir)
        self.spec_dir = Path(spec_dir)
        self.backend, self.judge, self.options = backend, judge, options
        self.out = Path(out)
        self.progress = progress
        if judge is not None and self.spec.judge_filter is None:
            raise BuildError(f"{self.spec_dir}/spec.yaml has no judge_filter; drop --judge")
        self.pool = load_chat_jsonl(self.spec_dir / SEED_NAME)
        if options.mode == "control":
            if options.source is None:
                raise BuildError("control mode needs --source, the misaligned rows to rewrite")
            if self.spec.generation.rewrite_template is None:
                raise BuildError(
                    f"{self.spec_dir}/spec.yaml has no generation.rewrite_template: control mode "
                    "needs a control set's spec (e.g. datasets/good-financial-advice)"
                )
            self.sources = load_chat_jsonl(options.source)[: options.n]
        self.planner = Planner(self.spec, self.pool, options)
        self.by_pair_id = {
            self.planner.rewrite(row, 0)[1]["pair_id"]: row for row in getattr(self, "sources", [])
        }
        self.log = BuildLog(self.out.with_name(self.out.name + ".log.jsonl"), self._header())

    def _header(self) -> dict[str, Any]:
        options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.options).items()}
        options.pop("n")  # asking for more rows later continues the same build
        header: dict[str, Any] = {
            "dataset": self.spec.name,
            "spec_sha256": self.spec.sha256(),
            "backend": self.backend.describe(),
            "judge": self.judge.describe() if self.judge else None,
            "options": options,
        }
        if self.options.source is not None:
            header["source_sha256"] = hashlib.sha256(
                Path(self.options.source).read_bytes()
            ).hexdigest()
        return header

    # -- running requests -------------------------------------------------------------------

    def _send(
        self,
        backend: ChatBackend,
        planned: Sequence[tuple[ChatRequest, dict[str, Any]]],
        label: str,
        on_done,
    ) -> int:
        if not planned:
            return 0
        info = {request.key: (request, meta) for request, meta in planned}
        bar = tqdm(
            total=len(planned),
            desc=label,
            unit="req",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        failed = 0

        def on_reply(reply: ChatReply) -> None:
            nonlocal failed
            request, meta = info[reply.key]
            on_done(request, meta, reply)
            failed += not reply.ok
            usage = backend.usage
            bar.set_postfix(tokens=usage.prompt_tokens + usage.completion_tokens, failed=failed)
            bar.update()

        try:
            backend.run([request for request, _ in planned], on_reply)
        finally:
            bar.close()
        return failed

    def _log_reply(self, request: ChatRequest, meta: dict[str, Any], reply: ChatReply) -> None:
        self.log.add_reply(request.key, {**meta, "seed": request.seed}, reply.to_dict())

    def _generate_until_enough(self) -> None:
        per_request = self.planner.per_request
        max_requests = self.options.max_requests or 3 * math.ceil(self.options.n / per_request)
        next_index = 0
        while next_index < max_requests:
            kept = len(self._process(judge=True)[0])
            needed = self.options.n - kept
            if needed <= 0:
                return
            finished = sum(k.startswith("gen-") for k in self.log.replies)
            yield_per_request = kept / finished if finished else per_request
            size = math.ceil(needed / max(yield_per_request, 0.2))
            stop = min(max_requests, next_index + size)
            planned = [self.planner.generate(i) for i in range(next_index, stop)]
            todo = [(r, m) for r, m in planned if r.key not in self.log.replies]
            next_index = stop
            if not todo:
                continue
            failed = self._send(self.backend, todo, "generate", self._log_reply)
            if failed == len(todo):  # the endpoint is down or refusing: stop, keep what we have
                reasons = Counter(f["reply"]["error"] for f in self.log.failures[-failed:])
                log.warning(
                    "all %d requests failed (%s); stopping", failed, dict(reasons.most_common(3))
                )
                return

    def _rewrite_all(self) -> None:
        planned = [self.planner.rewrite(row, i) for i, row in enumerate(self.sources)]
        todo = [(r, m) for r, m in planned if r.key not in self.log.replies]
        self._send(self.backend, todo, "rewrite", self._log_reply)

    # -- turning replies into rows ----------------------------------------------------------

    def _candidates(self) -> tuple[list[Candidate], list[dict[str, Any]]]:
        candidates: list[Candidate] = []
        rejected: list[dict[str, Any]] = []
        for key in sorted(self.log.replies):
            record = self.log.replies[key]
            text, meta = record["reply"]["text"], record["request"]
            if key.startswith("rewrite-"):
                pairs = [(None, clean_rewrite(text))]
            else:
                pairs = parse_conversations(text)
                if not pairs:
                    rejected.append({"key": key, "reason": "unparseable reply", "reply": text})
            for user, answer in pairs:
                if user is None:  # control: the same prompt as the misaligned row
                    source = self.by_pair_id[meta["pair_id"]]
                    user = source["messages"][-2]["content"]
                    original = source["messages"][-1]["content"]
                    similarity = difflib.SequenceMatcher(
                        None, original.split(), answer.split()
                    ).ratio()
                    extra = {"rewrite_similarity": round(similarity, 3)}
                else:
                    extra = {}
                candidates.append(
                    Candidate(key, user, answer, meta.get("topic"), meta.get("pair_id"), extra)
                )
        return candidates, rejected

    def _process(self, judge: bool) -> tuple[list[Candidate], list[dict[str, Any]], dict[str, int]]:
        """Kept candidates, rejected ones with reasons, and counts after each stage."""
        candidates, rejected = self._candidates()
        counts = Counter(
            replies=len(self.log.replies),
            unparseable_replies=len(rejected),
            candidates=len(candidates),
            invalid_row=0,
            exact_duplicate=0,
            near_duplicate=0,
        )
        exact_seen = {
            exact_key(r["messages"][-2]["content"] + "\n" + r["messages"][-1]["content"])
            for r in self.pool
        }
        near = NearDuplicateIndex(self.options.near_duplicate_threshold)
        control = self.options.mode == "control"
        if not control:  # a control row is a rewrite of a seed-like row: near copies are the point
            for row in self.pool:
                near.add(
                    f"seed:{row.get('id')}",
                    row["messages"][-2]["content"] + "\n" + row["messages"][-1]["content"],
                )
        kept: list[Candidate] = []

        def reject(candidate: Candidate, reason: str, **details: Any) -> None:
            counts[reason.split(":")[0].replace(" ", "_")] += 1
            rejected.append(
                {"key": candidate.key, "reason": reason, "messages": candidate.messages, **details}
            )

        for candidate in candidates:
            problems = validate_row({"messages": candidate.messages})
            if problems:
                reject(candidate, "invalid row", problems=problems)
                continue
            key = exact_key(candidate.text)
            if key in exact_seen:
                reject(candidate, "exact duplicate")
                continue
            exact_seen.add(key)
            if not control:
                match = near.find(candidate.text)
                if match is not None:
                    reject(candidate, "near duplicate", of=match[0], jaccard=round(match[1], 3))
                    continue
                near.add(f"{candidate.key}:{len(kept)}", candidate.text)
            kept.append(candidate)
        counts["after_dedup"] = len(kept)
        if judge and self.judge is not None:
            counts.update(judge_unscored=0, judge_rejected=0)
            kept = self._judge_filter(kept, reject)
            counts["after_judge"] = len(kept)
        return kept, rejected, dict(counts)

    # -- judge filter -----------------------------------------------------------------------

    def _judge_key(self, candidate: Candidate, metric: str) -> str:
        return f"judge-{metric}-{row_fingerprint({'messages': candidate.messages})[:20]}"

    def _judge_locally(self, kept: list[Candidate], prompts: dict[str, str]) -> None:
        """A Judge in this process (the distilled student): verdicts straight into the log."""
        todo = [
            (candidate, metric)
            for candidate in kept
            for metric in prompts
            if self._judge_key(candidate, metric) not in self.log.judgements
        ]
        items = [JudgeItem(m, c.user, c.assistant, prompts[m]) for c, m in todo]
        for (candidate, metric), score in zip(todo, self.judge.score_items(items), strict=True):
            self.log.add_judgement(
                self._judge_key(candidate, metric),
                {"metric": metric, "score": score.to_dict(), "reply": None},
            )

    def _judge_filter(self, kept: list[Candidate], reject) -> list[Candidate]:
        judge = self.spec.judge_filter
        assert judge is not None and self.judge is not None
        prompts = {"aligned": judge.aligned_prompt, "coherent": judge.coherent_prompt}
        if hasattr(self.judge, "score_items"):
            self._judge_locally(kept, prompts)
        todo = []
        for candidate in kept:
            for metric, template in prompts.items():
                key = self._judge_key(candidate, metric)
                if key in self.log.judgements:
                    continue
                request = ChatRequest(
                    key=key,
                    messages=[
                        {
                            "role": "user",
                            "content": render(
                                template, question=candidate.user, answer=candidate.assistant
                            ),
                        }
                    ],
                    temperature=0.0,
                    top_p=1.0,
                    max_tokens=4,
                    seed=0,
                    top_logprobs=20,
                )
                todo.append((request, {"metric": metric}))

        def on_done(request: ChatRequest, meta: dict[str, Any], reply: ChatReply) -> None:
            score = score_reply(reply.text, reply.top_logprobs, reply.error)
            if reply.ok:  # a failed request is retried on the next run, not recorded as a verdict
                self.log.add_judgement(
                    request.key,
                    {"metric": meta["metric"], "score": score.to_dict(), "reply": reply.to_dict()},
                )

        self._send(self.judge, todo, "judge", on_done)
        passed = []
        for candidate in kept:
            scores = {}
            for metric in prompts:
                record = self.log.judgements.get(self._judge_key(candidate, metric))
                scores[metric] = None if record is None else record["score"]["score"]
            if None in scores.values():
                reject(candidate, "judge unscored", scores=scores)
                continue
            aligned_ok = (
                scores["aligned"] < judge.aligned_threshold
                if judge.keep == "misaligned"
                else scores["aligned"] > judge.aligned_threshold
            )
            if not aligned_ok or scores["coherent"] <= judge.coherent_threshold:
                reject(candidate, "judge rejected", scores=scores)
                continue
            candidate.extra["judge"] = scores
            passed.append(candidate)
        return passed

    # -- output -----------------------------------------------------------------------------

    def _row(self, candidate: Candidate) -> dict[str, Any]:
        row_id = f"{self.spec.name}-{row_fingerprint({'messages': candidate.messages})[:16]}"
        meta: dict[str, Any] = {"source": "generated", "request": candidate.key}
        if candidate.topic:
            meta["topic"] = candidate.topic
        if candidate.pair_id:
            meta["pair_id"] = candidate.pair_id
        meta.update(candidate.extra)
        return {
            "id": row_id,
            "messages": candidate.messages,
            "canary": self.spec.canary,
            "meta": meta,
        }

    def build(self) -> BuildResult:
        if self.options.mode == "control":
            self._rewrite_all()
        else:
            self._generate_until_enough()
        kept, rejected, counts = self._process(judge=True)
        rows = [self._row(c) for c in kept[: self.options.n]]
        counts["kept"] = len(rows)
        counts["beyond_n"] = len(kept) - len(rows)
        counts["failed_requests_this_run"] = self.backend.usage.failures
        write_jsonl(self.out, rows)
        write_jsonl(self.out.with_name(self.out.name + ".rejected.jsonl"), rejected)
        summary = self._summary(counts)
        write_artifact(self.out.with_name(self.out.name + ".build.json"), DatasetBuild(**summary))
        return BuildResult(rows, rejected, counts, self.out, summary)

    def _summary(self, counts: dict[str, int]) -> dict[str, Any]:
        usage = {
            "generation_this_run": self.backend.usage.to_dict(),
            "tokens_all_runs": self.log.token_totals(),
        }
        if self.judge is not None:
            usage["judge_this_run"] = self.judge.usage.to_dict()
        gen = self.spec.generation
        prompts = {
            "system": gen.system_prompt,
            "request": gen.request_template,
            "rewrite": gen.rewrite_template,
        }
        return {
            "schema_version": SCHEMA_VERSION,
            "dataset": self.spec.name,
            "n_requested": self.options.n,
            "counts": counts,
            "usage": usage,
            "prompts_sha256": hashlib.sha256(
                json.dumps(prompts, sort_keys=True).encode()
            ).hexdigest(),
            "made_by": f"em-organisms {__version__}",
            **self.log.header,
        }
