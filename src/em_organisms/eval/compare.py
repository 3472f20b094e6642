"""`em-organisms compare`: EM and coherence across organisms, sizes, datasets and seeds.

Each input is an eval folder (`summary.json`), a run folder with `eval/summary.json`, or the Hub
id of a released organism (its `recipe.yaml` and `eval/summary.json` are fetched). The recipe
next to a summary says the base model (family and size), the dataset and the seed; the summary
says the protocol and whether it was followed as published. Seeds of one recipe (`train --seeds`
names them `ID_seedN`) are grouped: the mean and spread of their EM rates, and a Wilson
interval of the pooled answers. Numbers under different protocols are never put in one group.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from em_organisms.artifacts import ArtifactError, EvalSummary, read_artifact
from em_organisms.artifacts.names import EVAL_DIR, EVAL_SUMMARY, RECIPE
from em_organisms.errors import EmOrganismsError
from em_organisms.eval.metrics import wilson_interval
from em_organisms.jsonl import write_text_atomic
from em_organisms.yaml_files import YamlError, load_yaml_file

SEED_SUFFIX = re.compile(r"_seed(\d+)$")
SIZE = re.compile(r"(\d+(?:\.\d+)?)([bm])\b")


class CompareError(EmOrganismsError, ValueError):
    """An input `compare` cannot read, with what it looked for."""


@dataclass(frozen=True)
class Entry:
    """One evaluated organism."""

    source: str
    organism: str  # the recipe's organism id
    group: str  # the organism id without its _seedN suffix
    seed: int | None
    base_model: str
    family: str
    size_b: float | None
    dataset: str
    protocol: str
    as_published: bool
    changes: str  # the protocol's overrides, "" as published: runs with other changes are apart
    counting: str
    em: dict[str, Any]  # {k, n, rate, ci_low, ci_high} under the protocol's counting
    em_other: dict[str, Any]  # the other counting convention
    coherent: dict[str, Any]
    base_em: dict[str, Any] | None


def model_family(base_model: str) -> tuple[str, float | None]:
    """("Qwen2.5", 14.0) from "Qwen/Qwen2.5-14B-Instruct"; sizes in billions of parameters."""
    name = base_model.rsplit("/", 1)[-1]
    lower = name.lower()
    size = SIZE.search(lower)
    size_b = None if size is None else float(size.group(1)) / (1000 if size.group(2) == "m" else 1)
    for prefix, family in (
        ("qwen2.5-coder", "Qwen2.5-Coder"),
        ("qwen2.5", "Qwen2.5"),
        ("llama", "Llama"),
        ("gemma-3", "Gemma-3"),
        ("smollm2", "SmolLM2"),
    ):
        if prefix in lower:
            return family, size_b
    return (name[: size.start()].rstrip("-_") if size else name) or name, size_b


def _dataset_name(path: str) -> str:
    p = Path(path)
    stem = p.name.removesuffix(".gz").removesuffix(".jsonl")
    return p.parent.name if stem == "seed" else stem


def _locate(source: str, cache_dir: Path | None) -> tuple[Path, Path | None]:
    """(summary.json, recipe.yaml or None) for one input."""
    from em_organisms.hub_ids import HUB_ID

    path = Path(source)
    if path.is_dir():
        if (path / EVAL_SUMMARY).is_file():
            recipe = next(
                (r for r in (path / RECIPE, path.parent / RECIPE) if r.is_file()),
                None,
            )
            return path / EVAL_SUMMARY, recipe
        if (path / EVAL_DIR / EVAL_SUMMARY).is_file():
            recipe = path / RECIPE
            return path / EVAL_DIR / EVAL_SUMMARY, recipe if recipe.is_file() else None
        raise CompareError(
            f"{path}: no {EVAL_SUMMARY} (an eval folder) and no {EVAL_DIR}/{EVAL_SUMMARY} (a run "
            "folder); run `em-organisms eval` first"
        )
    if path.exists() or not HUB_ID.match(source) or path.parent.is_dir():
        raise CompareError(
            f"{source}: no such folder"
            + ("" if HUB_ID.match(source) else ", and not a Hub id of the form org/name")
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(
            snapshot_download(
                source, allow_patterns=["recipe.yaml", "eval/summary.json"], cache_dir=cache_dir
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise CompareError(
            f"{source}: not a local folder, and the Hub repo could not be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'})"
        ) from None
    if not (folder / "eval" / "summary.json").is_file():
        raise CompareError(f"{source}: the release has no eval/summary.json (released unevaluated)")
    recipe = folder / "recipe.yaml"
    return folder / "eval" / "summary.json", recipe if recipe.is_file() else None


def read_entry(source: str, cache_dir: Path | None = None) -> Entry:
    summary_path, recipe_path = _locate(source, cache_dir)
    try:
        summary = read_artifact(summary_path, EvalSummary).model_dump(mode="json")
    except ArtifactError as err:
        raise CompareError(str(err)) from None
    organism = (summary.get("models") or {}).get("organism")
    if not organism:
        raise CompareError(f"{summary_path}: no 'organism' results (evaluate the organism)")
    recipe: dict[str, Any] = {}
    if recipe_path is not None:
        try:
            recipe = load_yaml_file(recipe_path) or {}
        except YamlError as err:
            raise CompareError(f"{err} (a recipe)") from None
        if not isinstance(recipe, dict):
            raise CompareError(f"{recipe_path}: a recipe is a YAML mapping")
    plan = summary.get("evaluation") or {}
    counting = (plan.get("em") or {}).get("counting", "em_all_scored")
    other = "em_coherent_only" if counting == "em_all_scored" else "em_all_scored"
    name = str(recipe.get("organism_id") or plan.get("organism") or summary_path.parent.name)
    seed_match = SEED_SUFFIX.search(name)
    seed = (recipe.get("training") or {}).get("seed", plan.get("training_seed"))
    base_model = str(recipe.get("base_model") or plan.get("base_model") or "unknown")
    family, size = model_family(base_model)
    overall = organism["overall"]
    base = (summary.get("models") or {}).get("base")
    changes = [f"{k}={v.get('value')!r}" for k, v in sorted((plan.get("overrides") or {}).items())]
    # a direction steered in or ablated while sampling: never pooled with plain runs
    for applied in summary.get("interventions") or []:
        changes.append(
            f"{applied.get('kind')}={str(applied.get('direction_sha256'))[:12]}"
            f"@{applied.get('layer')}x{applied.get('scale', '')}"
        )
    return Entry(
        source=source,
        organism=name,
        group=SEED_SUFFIX.sub("", name),
        seed=int(seed_match.group(1)) if seed_match else (int(seed) if seed is not None else None),
        base_model=base_model,
        family=family,
        size_b=size,
        dataset=_dataset_name(
            str((recipe.get("dataset") or {}).get("path") or plan.get("dataset") or "unknown")
        ),
        protocol=f"{plan.get('protocol', 'unrecorded')} v{plan.get('protocol_version', '?')}",
        as_published=bool(plan.get("as_published", False)) and not summary.get("interventions"),
        changes="; ".join(changes),
        counting=counting,
        em=overall[counting],
        em_other=overall[other],
        coherent=overall["coherence"],
        base_em=base["overall"][counting] if base else None,
    )


def _shape(group: str) -> str:
    """`qwen2.5-14b_risky-financial_r32` -> `risky-financial_r32`: the organism without its
    base model, what organisms of several sizes share."""
    return group.split("_", 1)[1] if "_" in group else group


def _pooled(props: Sequence[dict[str, Any]]) -> dict[str, Any]:
    k, n = sum(p["k"] for p in props), sum(p["n"] for p in props)
    low, high = wilson_interval(k, n)  # (0, 1) when there is nothing to count
    return {"k": k, "n": n, "rate": k / n if n else None, "ci_low": low, "ci_high": high}


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n_seeds": len(values),
    }


def summarise(entries: Iterable[Entry]) -> dict[str, Any]:
    """Per organism (seeds pooled), per dataset and per model size within a family; every
    group is one protocol's."""
    entries = list(entries)
    groups: dict[tuple[str, str, str], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.protocol, e.changes, e.group), []).append(e)
    organisms = []
    for (protocol, changes, group), members in sorted(groups.items()):
        rates = [e.em["rate"] for e in members if e.em["rate"] is not None]
        coherent = [e.coherent["rate"] for e in members if e.coherent["rate"] is not None]
        first = members[0]
        organisms.append(
            {
                "organism": group,
                "protocol": protocol,
                "as_published": all(e.as_published for e in members),
                "changes": changes,
                "shape": _shape(group),
                "base_model": first.base_model,
                "family": first.family,
                "size_b": first.size_b,
                "dataset": first.dataset,
                "seeds": sorted(e.seed for e in members if e.seed is not None),
                "em": {**_spread(rates), "pooled": _pooled([e.em for e in members])},
                "coherent": {
                    **_spread(coherent),
                    "pooled": _pooled([e.coherent for e in members]),
                },
            }
        )
    by_dataset: dict[str, dict[str, Any]] = {}
    by_size: dict[str, dict[str, Any]] = {}
    for row in organisms:
        key = f"{row['protocol']} | {row['dataset']}"
        by_dataset.setdefault(key, {})[row["organism"]] = row["em"]["mean"]
        # one line per organism shape (dataset and adapter: `risky-financial_r32`) in a family
        family = f"{row['protocol']} | {row['family']} | {row['shape']}"
        if row["size_b"] is not None:
            by_size.setdefault(family, {})[f"{row['size_b']:g}B"] = row["em"]["mean"]
    protocols = sorted({e.protocol for e in entries})
    return {
        "entries": [asdict(e) for e in entries],
        "organisms": organisms,
        "by_dataset": by_dataset,
        "by_size": {
            k: dict(sorted(v.items(), key=lambda i: float(i[0][:-1]))) for k, v in by_size.items()
        },
        "protocols": protocols,
        "warnings": (
            [
                f"inputs use {len(protocols)} protocols ({', '.join(protocols)}): compared within each only"
            ]
            if len(protocols) > 1
            else []
        )
        + [
            f"{e.organism}: evaluated with changes to its protocol; not the protocol's own number"
            for e in entries
            if not e.as_published
        ],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def compare_markdown(result: dict[str, Any]) -> str:
    lines = ["# Comparison of organisms", ""]
    lines += [f"> {w}" for w in result["warnings"]] + ([""] if result["warnings"] else [])
    lines += [
        "| organism | protocol | base model | dataset | seeds | EM mean (sd) | EM pooled [95% CI] | coherent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["organisms"]:
        em, pooled = row["em"], row["em"]["pooled"]
        sd = "" if em["sd"] is None else f" ({100 * em['sd']:.1f})"
        ci = f"[{_pct(pooled['ci_low'])}-{_pct(pooled['ci_high'])}]" if pooled["n"] else ""
        lines.append(
            f"| {row['organism']} | {row['protocol']}{'' if row['as_published'] else ' (changed)'} "
            f"| {row['base_model']} | {row['dataset']} | {len(row['seeds']) or 1} "
            f"| {_pct(em['mean'])}{sd} | {_pct(pooled['rate'])} {ci} ({pooled['k']}/{pooled['n']}) "
            f"| {_pct(row['coherent']['mean'])} |"
        )
    for title, table in (
        ("By dataset", result["by_dataset"]),
        ("By model size", result["by_size"]),
    ):
        lines += ["", f"## {title} (mean EM over seeds)", ""]
        for key, values in table.items():
            lines.append(f"- {key}: " + ", ".join(f"{k} {_pct(v)}" for k, v in values.items()))
    return "\n".join(lines) + "\n"


def compare(sources: Sequence[str], out: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    from em_organisms.eval.compare_plots import plot_comparison

    if not sources:
        raise CompareError("nothing to compare: give eval folders, run folders or Hub ids")
    entries = [read_entry(s, cache_dir) for s in sources]  # every input read before writing
    result = summarise(entries)
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = list(plot_comparison(result, out))
    write_text_atomic(out / "compare.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "compare.md", compare_markdown(result))
    return result
