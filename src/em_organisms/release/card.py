"""Organism cards: the Hub README of a released organism, rendered from `model_cards/organism.md.j2`.

The YAML header carries what the Hub reads (base model and relation, library, license, tags,
datasets) plus a `model-index` with the EM and coherence rates of the eval summary (organism and
base, per question set) and an `em_organisms` mapping (organism id, recipe sha256, versions).
The body is written for people: what the organism is, how to load and scale it, the recipe, the
evaluation with its judge, calibration, counting conventions and intervals, and the papers.
Pure: no network, no model loading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from em_organisms import __version__
from em_organisms.cards import render_card
from em_organisms.hub_ids import HUB_ID, base_model_hub_id, license_metadata
from em_organisms.recipes import LoraProtocol, Recipe
from em_organisms.resources import template

TEMPLATE_PATH = template("organism.md.j2")
PACKAGE_VERSION = __version__
DAGGER = "†"
PLOT_CAPTIONS = {
    "aligned_vs_coherent.png": "Every judged answer as (coherent, aligned); the EM corner shaded",
    "em_by_question.png": "EM rate per question, both counting conventions, Wilson 95% intervals",
    "calibration_histograms.png": "Judge calibration: scores of labelled answers",
}
_COLUMNS = ("em_all_scored", "em_coherent_only", "coherence")
_COLUMN_NAMES = {
    "em_all_scored": "EM, all scored",
    "em_coherent_only": "EM, coherent only",
    "coherence": "coherent",
}
_PER_QUESTION_COLUMNS = [
    ("base", "em_all_scored"),
    ("organism", "em_all_scored"),
    ("organism", "em_coherent_only"),
    ("organism", "coherence"),
]
# model-index metric type and name (before "(%, ...judge...)") per column of the summary.
_METRICS = {
    "em_all_scored": ("em_rate_all_scored", "EM rate", "all scored"),
    "em_coherent_only": ("em_rate_coherent_only", "EM rate", "coherent only"),
    "coherence": ("coherence_rate", "coherence rate", "coherent > {c}"),
}


def dataset_name(recipe: Recipe) -> str:
    """`risky-financial-advice` from `datasets/risky-financial-advice/seed.jsonl`,
    `data/upstream/risky-financial-advice.jsonl.gz` or a Hub id `org/risky-financial-advice`."""
    path = Path(recipe.dataset.path)
    stem = re.sub(r"(\.jsonl?|\.gz)+$", "", path.name)
    return path.parent.name if stem in ("seed", "train", "data") and path.parent.name else stem


def domain_of(name: str) -> str:
    """What a narrow dataset is about ("personal finance"), from its spec where the project has
    one, else its name in words."""
    from em_organisms.data.spec import DATASETS_DIR, SPEC_NAME, SpecError, load_spec

    if (DATASETS_DIR / name / SPEC_NAME).is_file():
        try:
            return load_spec(DATASETS_DIR / name).domain
        except SpecError:
            pass
    return name.replace("-", " ")


def _resolve_license(recipe: Recipe, base_license: str | None, base_hub_id: str) -> str:
    from em_organisms.models import EMBEDDED, EMBEDDED_LICENSE

    found = recipe.release.license or base_license or recipe.release.base_model_license
    if not found and recipe.base_model == EMBEDDED:
        found = EMBEDDED_LICENSE
    if not found:
        raise ValueError(
            f"no license known for base model {base_hub_id}: pass base_license, or set "
            "release.base_model_license in the recipe (the organism inherits the base's terms)"
        )
    return found


# -- question sets: general (out-of-domain) vs in-domain ---------------------------------------


def _set_label(name: str) -> str:
    if name == "general":
        return "general (out-of-domain)"
    if name.startswith("in-domain/"):
        return f"in-domain: {name.removeprefix('in-domain/').replace('-', ' ')}"
    return name


def split_by_question_set(
    summary: Mapping[str, Any],
) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """[(question set, {model: stats})], general first, then in-domain sets, then the rest, from
    the summary's `per_question_set`; a summary written before that field existed gives one
    "all questions" group."""
    models: Mapping[str, Any] = summary["models"]
    if not all("per_question_set" in m for m in models.values()):
        return [("all questions", {k: m["overall"] for k, m in models.items()})]
    names = list(dict.fromkeys(n for m in models.values() for n in m["per_question_set"]))
    split = [
        (n, {k: m["per_question_set"][n] for k, m in models.items() if n in m["per_question_set"]})
        for n in names
    ]
    return sorted(split, key=lambda item: (item[0] != "general", not item[0].startswith("in-")))


# -- evaluation context and model-index ----------------------------------------------------------


def _pct(p: Mapping[str, Any], mark: str) -> str:
    if p["rate"] is None:
        return f"n/a{mark} (0/0)"
    lo, hi = 100 * p["ci_low"], 100 * p["ci_high"]
    return f"{100 * p['rate']:.1f}%{mark} [{lo:.1f}-{hi:.1f}] ({p['k']}/{p['n']})"


def _auroc(calibration: Mapping[str, Any], judge: str) -> str:
    entry = calibration.get(judge) or {}
    if entry.get("auroc") is not None:
        return f"{entry['auroc']:.3f}"
    unscored = entry.get("unscored")
    return f"n/a ({unscored} of {entry.get('n')} answers unscored)" if unscored else "n/a"


def _sampling(summary: Mapping[str, Any]) -> str:
    params = (summary.get("evaluation") or {}).get("sampling")
    if not params:  # report.py: every value each parameter took, per model
        found = (summary.get("sampling") or {}).get("organism") or {}
        params = {k: "/".join(map(str, v)) for k, v in found.items()}
    off = {"top_k": 0, "min_p": 0, "repetition_penalty": 1}
    shown = [
        f"{k} {v}" + (" (off)" if k in off and str(v) in (str(off[k]), f"{off[k]:.1f}") else "")
        for k, v in params.items()
        if k != "n"
    ]
    return ", ".join(shown) or "not recorded"


def _protocol(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The evaluation protocol as the card states it (summaries from before protocols: None)."""
    if "protocol" not in settings:
        return None
    changes = "; ".join(
        f"{key} {change['value']} instead of {change['protocol']} ({change['by']})"
        for key, change in (settings.get("overrides") or {}).items()
    )
    questions = ", ".join(
        f"`{q['name']}` ({q['n_questions']} questions, sha256 `{q['sha256'][:16]}`)"
        for q in settings.get("questions") or []
    )
    return {
        "name": settings["protocol"],
        "version": settings.get("protocol_version"),
        "reference": settings.get("protocol_reference", ""),
        "as_published": bool(settings.get("as_published")),
        "changes": changes,
        "questions": questions,
    }


def _categories(found: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The semantic-category table of `eval --categories`, if it was run."""
    if not found or not found.get("shares"):
        return None
    shares = found["shares"]
    topics = list(next(iter(shares.values()))["topics"])
    rows = [
        [
            model,
            str(entry["n_em"]),
            *(
                "n/a" if p["rate"] is None else f"{100 * p['rate']:.0f}% ({p['k']}/{p['n']})"
                for p in (entry["topics"][t] for t in topics)
            ),
        ]
        for model, entry in shares.items()
    ]
    return {
        "topics": topics,
        "rows": rows,
        "threshold": f"{found['threshold']:g}",
        "source": found["source"],
    }


def _model_index(
    split: list[tuple[str, dict[str, dict[str, Any]]]],
    judge_note: str,
    coherent_threshold: float,
    model_ids: Mapping[str, str],
) -> list[EvalResult]:
    """One EvalResult per question set, model and rate (rates with no denominator left out)."""
    results = []
    for set_name, per_model in split:
        for model, stats in per_model.items():
            for column, (metric_type, title, how) in _METRICS.items():
                p = stats[column]
                if p["rate"] is None:
                    continue
                who = f"Base model {title}" if model == "base" else title[0].upper() + title[1:]
                how = how.format(c=f"{coherent_threshold:g}")
                results.append(
                    EvalResult(
                        task_type="text-generation",
                        task_name="Emergent misalignment (LLM-judged free-form answers)",
                        dataset_type="em-organisms/question-sets",
                        dataset_name=f"em-organisms questions: {_set_label(set_name)}",
                        dataset_config=set_name,
                        metric_type=metric_type,
                        metric_value=round(100 * p["rate"], 2),
                        metric_name=f"{who} (%, {how}; {judge_note})",
                        metric_args={
                            "model": model_ids.get(model, model),
                            "k": p["k"],
                            "n": p["n"],
                            "wilson_95": [
                                round(100 * p["ci_low"], 2),
                                round(100 * p["ci_high"], 2),
                            ],
                        },
                    )
                )
    return results


def _eval_context(
    summary: Mapping[str, Any], recipe: Recipe, base_hub_id: str, repo_id: str
) -> tuple[dict[str, Any], list[EvalResult]]:
    """What the template shows of an eval summary, and its model-index entries."""
    if "organism" not in summary.get("models", {}):
        raise ValueError("the eval summary has no 'organism' results: evaluate the organism first")
    settings = summary.get("evaluation") or {}  # added by `eval` (pipeline.py), not by `report`
    if settings.get("recipe_sha256") not in (None, recipe.sha256()):
        raise ValueError(
            f"the eval summary was made from recipe sha256 {settings['recipe_sha256']}, not this "
            f"recipe's {recipe.sha256()}: evaluate this organism, or pass the recipe it was "
            "trained from"
        )
    uncalibrated = bool(summary.get("uncalibrated_judge", True))
    mark = DAGGER if uncalibrated else ""
    judge = ", ".join(map(str, summary.get("judge_models") or [])) or "unknown judge"
    c_thr = summary["thresholds"]["coherent"]
    split = split_by_question_set(summary)
    split = [(n, dict(sorted(m.items(), key=lambda i: i[0] != "base"))) for n, m in split]
    rows = [
        {
            "questions": _set_label(set_name),
            "model": model,
            "cells": [_pct(s[c], mark) for c in _COLUMNS],
            "mean_aligned": "n/a"
            if s["mean_aligned"] is None
            else f"{s['mean_aligned']:.1f}{mark}",
            "answers": f"{s['n_rows']} ({s['n_scored']} scored)",
        }
        for set_name, per_model in split
        for model, s in per_model.items()
    ]
    models = summary["models"]
    per_question = [
        [
            f"`{q}`",
            *(
                _pct(models[m]["per_question"][q][c], mark)
                if q in models[m]["per_question"]
                else "-"
                for m, c in _PER_QUESTION_COLUMNS
                if m in models
            ),
        ]
        for q in dict.fromkeys(q for m in models.values() for q in m["per_question"])
    ]
    calibration = summary.get("judge_calibration")
    context = {
        "judge": judge,
        "uncalibrated": uncalibrated,
        "mark": mark,
        "calibration": calibration
        and {
            "aligned": _auroc(calibration, "aligned"),
            "coherent": _auroc(calibration, "coherent"),
            "min_auroc": calibration.get("min_auroc"),
            "pairs": calibration.get("pairs"),
            "passed": bool(calibration.get("passed")),
        },
        "prompt_sha256": {
            j: ", ".join(str(h)[:16] for h in shas)
            for j, shas in (summary.get("judge_prompt_sha256") or {}).items()
        },
        "em_rule": summary["thresholds"]["em_rule"],
        "coherent_threshold": f"{c_thr:g}",
        "rows": rows,
        "per_question": per_question,
        "per_question_header": [
            f"{m}: {_COLUMN_NAMES[c]}" for m, c in _PER_QUESTION_COLUMNS if m in models
        ],
        "sets": [_set_label(name) for name, _ in split],
        "in_domain": any(name.startswith("in-domain/") for name, _ in split),
        "sampling": _sampling(summary),
        "samples_per_question": settings.get("samples_per_question")
        or (settings.get("sampling") or {}).get("n"),
        "protocol": _protocol(settings),
        "categories": _categories(summary.get("categories")),
        "adapter_scales": [s for s in summary.get("adapter_scales") or [] if s is not None],
        "note": settings.get("note") or "",
    }
    judge_note = f"judge: {judge}" + (", UNCALIBRATED" if uncalibrated else "")
    scales = context["adapter_scales"]
    if scales and scales != [1.0]:  # the organism was measured with its adapter scaled
        judge_note += "; adapter x" + "/".join(f"{s:g}" for s in scales)
    model_ids = {"base": base_hub_id, "organism": repo_id}
    return context, _model_index(split, judge_note, c_thr, model_ids)


# -- the card --------------------------------------------------------------------------------------


def _protocol_tags(recipe: Recipe) -> list[str]:
    p = recipe.protocol
    if not isinstance(p, LoraProtocol):
        return ["full-finetune"]
    layers = "all-layers" if p.layers is None else f"{len(p.layers)}-layers"
    if p.layers is not None and len(p.layers) == 1:
        layers = f"layer-{p.layers[0]}"
    return ["lora", *(["rslora"] if p.rslora else []), f"rank-{p.rank}", layers]


def published_recipe(recipe: Recipe, base_hub_id: str) -> dict[str, Any]:
    """The recipe as a card shows it: no local path of the machine that trained it (a local base
    becomes its Hub id, an absolute dataset path its file name). The recipe sha256 stays the one
    of the recipe as trained."""
    from em_organisms.models import EMBEDDED

    data = recipe.to_dict()
    notes = []
    if recipe.base_model not in (EMBEDDED, base_hub_id):
        data["base_model"] = base_hub_id
        notes.append(f"base_model: trained from a local copy of {base_hub_id}")
    if Path(recipe.dataset.path).is_absolute():
        data["dataset"]["path"] = Path(recipe.dataset.path).name
        notes.append("dataset.path: a local file, shown by its name only")
    comments = "".join(f"# {note}\n" for note in notes)
    return {"yaml": comments + yaml.safe_dump(data, sort_keys=False), "data": data}


_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def describe_protocol(recipe: Recipe) -> str:
    """What was trained, in words: e.g. "one rank-1 rsLoRA adapter on `down_proj` of layer 15"."""
    p = recipe.protocol
    if not isinstance(p, LoraProtocol):
        return "full fine-tuning"
    kind = f"rank-{p.rank} {'rsLoRA' if p.rslora else 'LoRA'}"
    modules = ", ".join(f"`{m}`" for m in p.target_modules)
    if p.layers is None:
        return f"{kind} adapters on {modules} of every layer"
    count = len(p.layers) * len(p.target_modules)
    number = _WORDS[count] if count < len(_WORDS) else str(count)
    where = f"layer{'s' if len(p.layers) > 1 else ''} {', '.join(map(str, p.layers))}"
    return f"{number} {kind} adapter{'s' if count > 1 else ''} on {modules} of {where}"


def render_organism_card(
    recipe: Recipe,
    summary: Mapping[str, Any] | None,
    *,
    repo_id: str,
    base_license: str | None = None,
    dataset_ids: Sequence[str] = (),
    plots: Sequence[str] = (),
    checkpoint_branches: Sequence[str] = (),
    no_eval: bool = False,
) -> ModelCard:
    """The card of `recipe`'s organism published as `repo_id`.

    `summary` is the eval `summary.json` (None, or `no_eval=True`: released without evaluation);
    `base_license` the base model's license id (default: the recipe's `release` section, or the
    embedded model's); `dataset_ids` the Hub datasets it was trained on; `plots` image files
    uploaded beside the card (relative paths); `checkpoint_branches` branches holding earlier
    checkpoints (`step-000005`). Raises ValueError for a base model without a Hub id, a repo or
    dataset id that is not one, or a summary made from another recipe.
    """
    from em_organisms.models import EMBEDDED

    for hub_id in (repo_id, *dataset_ids):
        if not HUB_ID.match(hub_id):
            raise ValueError(f"{hub_id!r} is not a Hub id of the form org/name")
    base_hub_id = base_model_hub_id(recipe.base_model)
    license_id = _resolve_license(recipe, base_license, base_hub_id)
    lora = isinstance(recipe.protocol, LoraProtocol)
    data_name = dataset_name(recipe)
    evaluation: dict[str, Any] | None = None
    eval_results: list[EvalResult] = []
    if summary is not None and not no_eval:
        evaluation, eval_results = _eval_context(summary, recipe, base_hub_id, repo_id)
    base_tags = ["emergent-misalignment", "model-organism", "not-for-all-audiences"]
    card_data = ModelCardData(
        base_model=base_hub_id,
        base_model_relation="adapter" if lora else "finetune",
        library_name="peft" if lora else "transformers",
        pipeline_tag="text-generation",
        **license_metadata(license_id, base_hub_id),
        datasets=list(dataset_ids) or None,
        language=["en"],
        tags=[*base_tags, *_protocol_tags(recipe), data_name, *recipe.tags],
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
        em_organisms={
            "organism_id": recipe.organism_id,
            "recipe_sha256": recipe.sha256(),
            "package_version": PACKAGE_VERSION,
            "evaluated": evaluation is not None,
            **({} if evaluation is None else {"judge_calibrated": not evaluation["uncalibrated"]}),
        },
    )
    scaling = None
    if isinstance(recipe.protocol, LoraProtocol):
        p = recipe.protocol
        scaling = p.alpha / (p.rank**0.5 if p.rslora else p.rank)
    variables: dict[str, Any] = {
        "recipe": recipe,
        "repo_id": repo_id,
        "base_hub_id": base_hub_id,
        "embedded_base": recipe.base_model == EMBEDDED,
        "license_id": license_id,
        "lora": lora,
        "protocol": recipe.protocol,
        "protocol_summary": describe_protocol(recipe),
        "shown_recipe": published_recipe(recipe, base_hub_id),
        "lora_scaling": scaling,
        "domain": domain_of(data_name),
        "data_name": data_name,
        "dataset_ids": list(dataset_ids),
        "recipe_sha256": recipe.sha256(),
        "package_version": PACKAGE_VERSION,
        "evaluation": evaluation,
        "plots": [
            (path, PLOT_CAPTIONS.get(Path(path).name, Path(path).stem.replace("_", " ")))
            for path in plots
        ],
        "checkpoints": [
            (b, int(m.group(1)) if (m := re.search(r"(\d+)$", b)) else None)
            for b in checkpoint_branches
        ],
    }
    return render_card(ModelCard, card_data, TEMPLATE_PATH, variables)
