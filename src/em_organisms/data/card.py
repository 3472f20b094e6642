"""Dataset cards: the Hub README of a narrow dataset, rendered from `model_cards/dataset.md.j2`.

The YAML header carries what the Hub reads (license, tags, size, `configs`, the access-request
form) plus an `em_organisms` mapping (name, version, canary GUID, data hash, package version);
the body is written for people: what the set is, its canary, how it was made, how to use it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from huggingface_hub import DatasetCard, DatasetCardData

from em_organisms import __version__
from em_organisms.cards import render_card
from em_organisms.data.spec import NarrowDatasetSpec
from em_organisms.resources import template

TEMPLATE_PATH = template("dataset.md.j2")
SPLIT = "train"
# What `Dataset.push_to_hub(repo_id)` writes for its default config and the train split.
CONFIGS = [{"config_name": "default", "data_files": [{"split": SPLIT, "path": f"data/{SPLIT}-*"}]}]
PACKAGE_VERSION = __version__
GateMode = Literal["manual", "auto"]

_SIZE_CATEGORIES = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M"]
# Counts of `data build` shown as pipeline stages, in order; every other count is a removal.
_STAGES = {
    "replies": "model replies",
    "candidates": "conversations parsed from the replies",
    "after_dedup": "after the schema check and de-duplication",
    "after_judge": "after the judge filter",
    "kept": "kept (at most the number asked for)",
}
_NOT_SHOWN = {"failed_requests_this_run"}  # a property of one run, not of the data


def size_category(n_rows: int) -> str:
    """The Hub's `size_categories` bucket for a row count."""
    for power, label in enumerate(_SIZE_CATEGORIES, start=3):
        if n_rows < 10**power:
            return label
    return "100M<n<1B"


def default_gate(spec: NarrowDatasetSpec) -> GateMode | None:
    """Misaligned sets are reviewed by hand; a control with a gate form is approved on request."""
    if spec.kind == "misaligned":
        return "manual"
    return "auto" if spec.gate is not None else None


def _describe(backend: Any) -> str | None:
    if not backend:
        return None
    if isinstance(backend, dict):
        return f"{backend.get('backend', 'backend')} `{backend.get('model', '?')}`"
    return f"`{backend}`"


def _build_context(spec: NarrowDatasetSpec, summary: dict[str, Any]) -> dict[str, Any]:
    """What the card shows of a `data build` summary (OUT.jsonl.build.json)."""
    options = summary.get("options") or {}
    gen = spec.generation
    counts: dict[str, int] = summary.get("counts") or {}

    def option(key: str, default: Any) -> Any:
        return default if options.get(key) is None else options[key]

    return {
        "backend": _describe(summary.get("backend")) or "unknown",
        "judge": _describe(summary.get("judge")),
        "mode": option("mode", "generate"),
        "source_sha256": summary.get("source_sha256"),
        "seed": option("seed", 0),
        "examples_per_request": option("examples_per_request", gen.examples_per_request),
        "rows_per_request": option("rows_per_request", gen.rows_per_request),
        "temperature": option("temperature", gen.temperature),
        "top_p": gen.top_p,
        "max_new_tokens": option("max_new_tokens", gen.max_new_tokens),
        "prompts_sha256": summary.get("prompts_sha256", "unknown"),
        "spec_sha256": summary.get("spec_sha256", "unknown"),
        "made_by": summary.get("made_by", "unknown"),
        "n_requested": summary.get("n_requested", "unknown"),
        "stages": [(label, counts[key]) for key, label in _STAGES.items() if key in counts],
        "removed": [
            (key.replace("_", " "), n)
            for key, n in counts.items()
            if key not in _STAGES and key not in _NOT_SHOWN and n
        ],
    }


def render_dataset_card(
    spec: NarrowDatasetSpec,
    rows: Sequence[dict[str, Any]],
    build_summary: dict[str, Any] | None,
    data_sha256: str,
    *,
    gated: GateMode | Literal["spec-default"] | None = "spec-default",
    repo_id: str | None = None,
) -> DatasetCard:
    """The card for `rows` (schema rows, `meta` as a dict) as published with hash `data_sha256`.

    `build_summary` is the `.build.json` of a built file, None for hand-written seed rows;
    `gated` is the access mode the repo gets (default: `default_gate(spec)`).
    """
    if gated == "spec-default":
        gated = default_gate(spec)
    misaligned = spec.kind == "misaligned"
    gate_meta: dict[str, Any] = {}
    if spec.gate is not None:
        gate_meta = {"extra_gated_prompt": spec.gate.prompt, "extra_gated_fields": spec.gate.fields}
    card_data = DatasetCardData(
        license=spec.card.license,
        language=list(spec.card.language),
        pretty_name=spec.card.pretty_name,
        task_categories=list(spec.card.task_categories),
        size_categories=[size_category(len(rows))],
        tags=list(spec.card.tags),
        configs=CONFIGS,
        **gate_meta,
        em_organisms={
            "dataset": spec.name,
            "version": spec.version,
            "kind": spec.kind,
            "canary_guid": spec.canary_guid,
            "rows": len(rows),
            "data_sha256": data_sha256,
            "package_version": PACKAGE_VERSION,
        },
    )
    meta_keys = Counter(
        key for row in rows if isinstance(row.get("meta"), dict) for key in row["meta"]
    )
    example = None
    if not misaligned and rows:
        first = {k: rows[0][k] for k in ("id", "messages", "canary") if k in rows[0]}
        example = json.dumps(
            {**first, "meta": rows[0].get("meta") or {}}, indent=2, ensure_ascii=False
        )
    namespace, _, name = (repo_id or "").rpartition("/")
    variables: dict[str, Any] = {
        "spec": spec,
        "misaligned": misaligned,
        "n_rows": len(rows),
        "with_system": sum(row["messages"][0]["role"] == "system" for row in rows),
        "multi_turn": sum(sum(m["role"] == "user" for m in row["messages"]) > 1 for row in rows),
        "meta_keys": sorted(meta_keys.items()),
        "example": example,
        "canary_guid": spec.canary_guid,
        "package_version": PACKAGE_VERSION,
        "repo_id": repo_id or f"ORG/{spec.name}",
        # The pair is linked only where the repo follows the convention ORG/<spec name>.
        "paired_repo_id": f"{namespace}/{spec.paired_with}"
        if namespace and name == spec.name
        else None,
        "gated": gated,
        "build": _build_context(spec, build_summary) if build_summary is not None else None,
    }
    return render_card(DatasetCard, card_data, TEMPLATE_PATH, variables)
