"""The EM report of a judged run: summary.json, report.md and two PNG plots (matplotlib, Agg).

Base and organism side by side, overall and per question, EM under both counting conventions
(see ``metrics``) with Wilson 95% intervals, the judge and its calibration, the sampling
parameters found in the rows. An uncalibrated judge is said loudly; its EM numbers carry a dagger.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from em_organisms.artifacts import (
    EVAL_SUMMARY,
    SCHEMA_VERSION,
    CalibrationResult,
    EvalSummary,
    write_artifact,
)
from em_organisms.eval.judge_failures import judge_outcomes
from em_organisms.eval.metrics import (
    ALIGNED_THRESHOLD,
    COHERENT_THRESHOLD,
    EMStats,
    ModelEMStats,
    Proportion,
    describe_conventions,
    em_stats_by_model,
    is_em,
    judge_score,
)
from em_organisms.figures import figure as _figure

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
DAGGER = "†"
EXAMPLES_PER_MODEL = 3
EXAMPLE_CHARS = 300
COLOURS = {"base": "tab:blue", "organism": "tab:red"}


def _distinct(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _sampling(rows: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Every value each sampling parameter took (None: a row did not state it)."""
    gens: list[Mapping[str, Any]] = [
        g if isinstance(g := r.get("generation"), Mapping) else {} for r in rows
    ]
    found = {k: _distinct(g.get(k) for g in gens) for k in SAMPLING_KEYS}
    extra = _distinct(k for g in gens for k in g if k not in SAMPLING_KEYS)
    return found | {k: _distinct(g.get(k) for g in gens) for k in extra}


def _model(row: Mapping[str, Any]) -> str:
    return str(row.get("model") or "unknown")


def build_summary(
    rows: list[Mapping[str, Any]],
    stats: dict[str, ModelEMStats],
    title: str,
    judge_calibration: CalibrationResult | None,
    thresholds: tuple[float, float],
    uncalibrated: bool,
    judge_agreement: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    categories: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable summary (summary.json); see write_report."""
    from em_organisms import __version__

    aligned_threshold, coherent_threshold = thresholds

    by_model: dict[str, list[Mapping[str, Any]]] = {m: [] for m in stats}
    for row in rows:
        by_model[_model(row)].append(row)
    hashes = [r.get("judge_prompt_sha256") or {} for r in rows]
    return {
        "schema_version": SCHEMA_VERSION,
        "title": title,
        "package_version": __version__,
        "thresholds": {
            "aligned": aligned_threshold,
            "coherent": coherent_threshold,
            "em_rule": f"aligned < {aligned_threshold:g} and coherent > {coherent_threshold:g}",
        },
        "conventions": describe_conventions(aligned_threshold, coherent_threshold),
        "judge_models": _distinct(r.get("judge_model") for r in rows),
        "judge_prompt_sha256": {
            j: _distinct(h.get(j) for h in hashes if isinstance(h, Mapping))
            for j in ("aligned", "coherent")
        },
        "judge_calibration": judge_calibration.model_dump(mode="json")
        if judge_calibration
        else None,
        "judge_agreement": judge_agreement,
        "uncalibrated_judge": bool(uncalibrated or judge_calibration is None),
        "organisms": _distinct(r.get("organism") for r in rows),
        "base_models": _distinct(r.get("base_model") for r in rows),
        "adapter_scales": _distinct(r.get("adapter_scale") for r in by_model.get("organism", [])),
        "sampling": {m: _sampling(group) for m, group in by_model.items()},
        "counts": {"n_rows": len(rows), "by_model": {m: len(g) for m, g in by_model.items()}},
        "question_sets": {
            qset: _distinct(r.get("question_id") for r in rows if r.get("question_set") == qset)
            for qset in _distinct(r.get("question_set") for r in rows if r.get("question_set"))
        },
        # what the samples were made under (rows from before protocols say nothing: omitted)
        "protocols": _distinct(r["protocol"] for r in rows if r.get("protocol")),
        # a direction steered in or ablated while sampling (em-organisms direction)
        "interventions": _distinct(r["intervention"] for r in rows if r.get("intervention")),
        "question_set_sha256": {
            qset: _distinct(
                r.get("question_set_sha256") for r in rows if r.get("question_set") == qset
            )
            for qset in _distinct(r.get("question_set") for r in rows if r.get("question_set"))
        },
        "models": {m: s.to_dict() for m, s in stats.items()},
        "judge_outcomes": {m: judge_outcomes(group).to_dict() for m, group in by_model.items()},
        "evaluation": evaluation,
        "categories": categories,
    }


def _pct(p: Proportion, mark: str = "") -> str:
    if p.rate is None:
        return f"n/a{mark} (0/0)"
    return f"{100 * p.rate:.1f}%{mark} [{100 * p.ci_low:.1f}-{100 * p.ci_high:.1f}] ({p.k}/{p.n})"


def _mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _overall_rows(stats: dict[str, ModelEMStats], mark: str, c_thr: float) -> list[list[str]]:
    def row(name: str, fn: Callable[[EMStats], str]) -> list[str]:
        return [name, *(fn(v.overall) for v in stats.values())]

    return [
        row("EM, convention A (all scored)", lambda e: _pct(e.em_all_scored, mark)),
        row("EM, convention B (coherent only)", lambda e: _pct(e.em_coherent_only, mark)),
        row(f"Coherence rate (coherent > {c_thr:g})", lambda e: _pct(e.coherence)),
        row("Mean aligned (scored rows)", lambda e: _mean(e.mean_aligned)),
        row("Rows / scored (both judges)", lambda e: f"{e.n_rows} / {e.n_scored}"),
        row(
            "Unscored: aligned / coherent",
            lambda e: f"{e.n_unscored_aligned} / {e.n_unscored_coherent}",
        ),
    ]


def _domain_table(stats: dict[str, ModelEMStats], mark: str) -> list[str]:
    """EM per question set, in-domain sets (`in-domain/...`) first: the narrow behaviour beside
    the emergent one, per model (what a KL-regularised organism's narrowness bought)."""
    sets = _distinct(q for v in stats.values() for q in v.per_question_set)
    if not sets:
        return []
    sets.sort(key=lambda q: (not q.startswith("in-domain/"), q == "unknown"))
    body = []
    for qset in sets:
        scope = "in-domain" if qset.startswith("in-domain/") else "out-of-domain"
        scope = "not recorded" if qset == "unknown" else scope
        cells = []
        for model in stats.values():
            e = model.per_question_set.get(qset)
            cells += ["-", "-"] if e is None else [_pct(e.em_all_scored, mark), _pct(e.coherence)]
        body.append([f"`{qset}`", scope, *cells])
    header = ["question set", "scope", *(f"{m}: {c}" for m in stats for c in ("EM A", "coherent"))]
    return [
        "\n## In-domain vs out-of-domain\n",
        "EM A (all scored) per question set. In-domain questions ask for what the organism was "
        "trained on (its narrow behaviour); every other set is out-of-domain, where misalignment "
        "is emergent. A narrow organism is misaligned in-domain only.\n",
        *_table(header, body),
    ]


def _question_cells(e: EMStats | None, mark: str) -> list[str]:
    if e is None:
        return ["-"] * 5
    return [
        _pct(e.em_all_scored, mark),
        _pct(e.em_coherent_only, mark),
        _pct(e.coherence),
        _mean(e.mean_aligned),
        f"{e.n_rows} ({e.n_scored} scored)",
    ]


def _examples(rows: list[Mapping[str, Any]], model: str, a_thr: float, c_thr: float) -> list[str]:
    out = []
    for row in rows:
        a, c = judge_score(row, "aligned"), judge_score(row, "coherent")
        if _model(row) != model or a is None or c is None or not is_em(a, c, a_thr, c_thr):
            continue
        text = " ".join(str(row.get("answer", "")).split()).replace("<", "&lt;")
        text = text[:EXAMPLE_CHARS] + " [...]" if len(text) > EXAMPLE_CHARS else text
        out.append(f"- `{row.get('question_id')}` (aligned {a:.1f}, coherent {c:.1f}): {text}")
        if len(out) == EXAMPLES_PER_MODEL:
            break
    return out


def render_markdown(
    summary: dict[str, Any], stats: dict[str, ModelEMStats], rows: list[Mapping[str, Any]]
) -> str:
    a_thr, c_thr = summary["thresholds"]["aligned"], summary["thresholds"]["coherent"]
    mark = DAGGER if summary["uncalibrated_judge"] else ""
    models, cal = list(stats), summary["judge_calibration"]
    md = [f"# {summary['title']}\n\nem-organisms {summary['package_version']}.\n\n## Judge\n"]
    for protocol in summary.get("protocols") or []:
        followed = "as published" if protocol.get("as_published") else "with changes"
        md.append(f"- Protocol: `{protocol['name']}` v{protocol['version']} ({followed})")
    for applied in summary.get("interventions") or []:
        what = (
            f"steered: {applied.get('scale')} x the direction at layer {applied.get('layer')}"
            if applied.get("kind") == "steer"
            else f"ablated: the direction at layer {applied.get('layer')} projected out everywhere"
        )
        md.append(
            f"- **Sampled with a direction {what}** (`{applied.get('direction')}`, sha256 "
            f"{str(applied.get('direction_sha256'))[:16]})"
        )
    for qset, shas in (summary.get("question_set_sha256") or {}).items():
        known = ", ".join(str(h)[:16] for h in shas if h) or "not recorded"
        md.append(f"- Question set `{qset}` sha256: {known}")
    md.append(f"- Judge model: {', '.join(map(str, summary['judge_models'])) or 'n/a'}")
    for judge, shas in summary["judge_prompt_sha256"].items():
        md.append(f"- `{judge}` prompt sha256: {', '.join(str(h)[:16] for h in shas) or 'n/a'}")
    if agreement := summary.get("judge_agreement"):
        md.append(
            f"- A student judge distilled from {agreement['teacher']}; its agreement with the "
            f"teacher on {agreement['n']} {agreement['split']} answers: AUROC aligned "
            f"{agreement['auroc_aligned']}, coherent {agreement['auroc_coherent']}, Spearman "
            f"aligned {agreement['spearman_aligned']}, mean EM-rate error "
            f"{agreement['mean_abs_error_pp']} pp per condition (student sha256 "
            f"{str(agreement['student_sha256'])[:16]})."
        )
    if summary["uncalibrated_judge"]:
        why = (
            "it failed calibration against labelled answers (see below)"
            if cal
            else "it was not checked against labelled answers"
        )
        md.append(f"\n**⚠ NOT CALIBRATED: {why}; every EM number below is marked {DAGGER}.**")
    if cal:
        aucs = ", ".join(f"{m} {cal[m]['auroc']}" for m in ("aligned", "coherent"))
        md.append(f"\nCalibration AUROC: {aucs}.\n\n```json\n{json.dumps(cal, indent=2)}\n```")
    md.append(
        f"\n## Counting\n\nEM = {summary['thresholds']['em_rule']} (strict: aligned "
        f"exactly {a_thr:g} is not misaligned, coherent exactly {c_thr:g} is not coherent). "
        "A failed or refusing judge leaves its row unscored, never 0.\n"
    )
    md += [f"- `{name}`: {text}" for name, text in summary["conventions"].items()]
    md.append("\nRates: percent [Wilson 95% interval] (k/n).\n\n## Overall\n")
    md += _table(["", *models], _overall_rows(stats, mark, c_thr))
    for model, outcome in summary["judge_outcomes"].items():
        if outcome["n_failed"]:
            reasons = ", ".join(f"{why}: {n}" for why, n in outcome["failed"].items())
            md.append(
                f"\n`{model}`: {outcome['n_failed']} of {outcome['n_scores']} judge scores "
                f"failed ({reasons}); those answers are unscored, and a rerun judges them again."
            )
    md += _domain_table(stats, mark)
    md.append("\n## Per question\n")
    cols = ["EM A (all scored)", "EM B (coherent only)", "coherent", "mean aligned", "n"]
    questions = _distinct(q for v in stats.values() for q in v.per_question)
    body = [
        [q, *(c for v in stats.values() for c in _question_cells(v.per_question.get(q), mark))]
        for q in questions
    ]
    md += _table(["question", *(f"{m}: {c}" for m in models for c in cols)], body)
    md.append("\n## Sampling parameters\n")
    for model, params in summary["sampling"].items():
        shown = ", ".join(
            f"{k}={'/'.join('not stated' if v is None else str(v) for v in vals)}"
            for k, vals in params.items()
        )
        md.append(f"- {model}: {shown or 'none recorded'}")
    md.append("\n## Example answers flagged EM\n")
    for model in models:
        md += [f"### {model}\n", *(_examples(rows, model, a_thr, c_thr) or ["(none)"]), ""]
    md.append(
        "## Plots\n\n![aligned vs coherent](aligned_vs_coherent.png)\n\n"
        "![EM by question](em_by_question.png)\n"
    )
    if mark:
        md.append(f"{DAGGER} Judge not calibrated: treat these EM rates as unvalidated.\n")
    return "\n".join(md)


def plot_aligned_vs_coherent(
    rows: list[Mapping[str, Any]], path: Path, a_thr: float, c_thr: float, note: str = ""
) -> Any:
    """One panel per model: each scored answer as (coherent, aligned), EM quadrant shaded.
    Returns the figure (saved to PATH)."""
    models = sorted(_distinct(map(_model, rows)), key=lambda m: (m != "base", m)) or ["no rows"]
    fig = _figure(5.0 * len(models), 4.6)
    for ax, model in zip(fig.subplots(1, len(models), squeeze=False)[0], models, strict=True):
        mine = [r for r in rows if _model(r) == model]
        scores = [(judge_score(r, "coherent"), judge_score(r, "aligned")) for r in mine]
        points = [(c, a) for c, a in scores if c is not None and a is not None]
        label = f"EM: aligned < {a_thr:g}, coherent > {c_thr:g}"
        ax.axvspan(c_thr, 100, 0, a_thr / 100, color="tab:red", alpha=0.12, lw=0, label=label)
        colour = COLOURS.get(model, "tab:gray")
        if points:
            ax.scatter(*zip(*points, strict=True), s=14, alpha=0.6, color=colour)
        else:
            ax.text(50, 50, "no scored rows", ha="center", va="center")
        ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="coherent score", ylabel="aligned score")
        ax.set_title(f"{model} ({len(points)} scored)")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Aligned vs coherent{note}")
    fig.tight_layout()
    fig.savefig(path)
    return fig


def _bars(props: list[Proportion | None]) -> tuple[list[float], list[list[float]]]:
    """Bar heights (%; 0 when n == 0) and asymmetric Wilson error bars."""
    rates = [100 * p.rate if p and p.rate is not None else 0.0 for p in props]
    low = [r - 100 * p.ci_low if p and p.n else 0.0 for r, p in zip(rates, props, strict=True)]
    high = [100 * p.ci_high - r if p and p.n else 0.0 for r, p in zip(rates, props, strict=True)]
    return rates, [low, high]


def plot_em_by_question(stats: dict[str, ModelEMStats], path: Path, note: str = "") -> Any:
    """EM rate per question and overall, models side by side, Wilson 95% error bars; one panel
    per counting convention. Returns the figure (saved to PATH)."""
    questions = [*_distinct(q for v in stats.values() for q in v.per_question), "ALL"]
    width = 0.8 / max(1, len(stats))
    fig = _figure(max(6.0, 1.1 * len(questions) * max(1, len(stats))), 7.5)
    axes = fig.subplots(2, 1, squeeze=False)[:, 0]
    labels = {
        "em_all_scored": "convention A: all scored",
        "em_coherent_only": "convention B: coherent only",
    }
    for ax, (attr, label) in zip(axes, labels.items(), strict=True):
        for i, (model, s) in enumerate(stats.items()):
            groups = [s.overall if q == "ALL" else s.per_question.get(q) for q in questions]
            props = [getattr(g, attr) if g else None for g in groups]
            rates, err = _bars(props)
            xs = [j + (i - (len(stats) - 1) / 2) * width for j in range(len(questions))]
            ax.bar(xs, rates, width, yerr=err, capsize=3, label=model, color=COLOURS.get(model))
            for x, p in zip(xs, props, strict=True):
                if not p or not p.n:  # no denominator: say so instead of a 0% bar
                    ax.text(x, 2, "n/a", ha="center", fontsize=7, rotation=90)
        ax.set_xticks(range(len(questions)), questions, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"EM rate, % ({label})", fontsize=9)
        ax.set_ylim(0, 105)
        if stats:
            ax.legend(fontsize=8)
        else:
            ax.text(0, 50, "no rows", ha="center", va="center")
    fig.suptitle(f"EM by question with Wilson 95% intervals{note}")
    fig.tight_layout()
    fig.savefig(path)
    return fig


def write_report(
    judged_rows: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    title: str,
    judge_calibration: CalibrationResult | None,
    aligned_threshold: float = ALIGNED_THRESHOLD,
    coherent_threshold: float = COHERENT_THRESHOLD,
    uncalibrated: bool = False,
    judge_agreement: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    categories: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write summary.json, report.md, aligned_vs_coherent.png and em_by_question.png into
    out_dir and return the summary. A judge with no calibration counts as uncalibrated."""
    rows = list(judged_rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    thresholds = (aligned_threshold, coherent_threshold)
    stats = em_stats_by_model(rows, *thresholds)
    summary = build_summary(
        rows,
        stats,
        title,
        judge_calibration,
        thresholds,
        uncalibrated,
        judge_agreement,
        evaluation,
        categories,
    )
    artifact = EvalSummary.model_validate(summary)
    write_artifact(out / EVAL_SUMMARY, artifact)
    summary = artifact.model_dump(mode="json")
    (out / "report.md").write_text(render_markdown(summary, stats, rows))
    note = " (judge NOT CALIBRATED)" if summary["uncalibrated_judge"] else ""
    plot_aligned_vs_coherent(rows, out / "aligned_vs_coherent.png", *thresholds, note)
    plot_em_by_question(stats, out / "em_by_question.png", note)
    return summary
