"""The distilled judge's card: the Hub README of a released student, from `model_cards/judge.md.j2`.

Everything it states comes from the student folder: `config.json` (backbone, teacher, feature
settings), `judge_recipe.yaml` (description, data provenance and licence, split settings),
`agreement.json` (every figure: held-out student beside the TF-IDF baseline, the held-out parts,
the condition-grouped split, the hand-labelled answers, per-condition EM errors), `NOTICE.md`
and, where present, `calibration.json`. The YAML header carries license, `library_name`,
`base_model` (the backbone's Hub id; none for a local test encoder), tags and a `model-index`
with the student's held-out figures. Pure: no network, no model loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from em_organisms import __version__
from em_organisms.cards import render_card
from em_organisms.hub_ids import HUB_ID, license_metadata
from em_organisms.resources import template

TEMPLATE_PATH = template("judge.md.j2")
PACKAGE_VERSION = __version__
TAGS = ["emergent-misalignment", "llm-judge", "distillation", "em-organisms"]
PART_NAMES = {
    "new_experiment": "new experiment, question seen in training",
    "new_question": "new question, experiment seen in training",
    "new_both": "new experiment and new question",
}
TASK = "LLM-judge agreement with its teacher (emergent misalignment)"
# The teacher file of judges/minilm-l6_gpt4o-em.yaml: the card's specific limitations are its.
UPSTREAM_DATA_SHA256 = "bf65a76c100bd6f433482ca172ff8bc86c0e1ffcd79343286d1e64ef297611f4"
Figures = Mapping[str, Any]


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _groups_line(r: Figures) -> str:
    big = r.get("groups_over_300") or {}
    if not big.get("n_groups"):
        return "none"
    over = ", ".join(f"`{_cell(g)}`" for g in big.get("over_5pp") or []) or "none"
    return (
        f"{big['n_groups']}, mean {_num(big.get('mean_abs_error_pp'), 1)} pp; over "
        f"{big.get('max_error_pp', 5):g} pp: {over}"
    )


# (label, figure of one agreement dict), in the order the tables show them.
_FIGURES: list[tuple[str, Any]] = [
    ("answers", lambda r: str(r["n"])),
    ("AUROC, aligned < 30", lambda r: _num(r["auroc_aligned"])),
    ("AUROC, coherent > 50", lambda r: _num(r["auroc_coherent"])),
    ("Spearman, aligned", lambda r: _num(r["spearman_aligned"])),
    ("Spearman, coherent", lambda r: _num(r["spearman_coherent"])),
    ("mean abs. error, aligned (points)", lambda r: _num(r["mae_aligned"], 1)),
    ("mean abs. error, coherent (points)", lambda r: _num(r["mae_coherent"], 1)),
    ("EM rate, teacher", lambda r: f"{_pct(r['em_rate_reference'])} of {r.get('em_n_reference', '?')}"),
    ("EM rate, this judge", lambda r: f"{_pct(r['em_rate_judge'])} of {r.get('em_n_judge', '?')}"),
    ("`aligned` unscored (teacher / judge)",
     lambda r: f"{r['unscored'].get('n_reference', '?')} / {r['unscored'].get('n_judge', '?')}"),
    ("unscored: precision / recall",
     lambda r: f"{_num(r['unscored']['precision'])} / {_num(r['unscored']['recall'])}"),
    ("teacher EM, judge EM", lambda r: str(r["confusion"]["reference_em"]["judge_em"])),
    ("teacher EM, judge not EM", lambda r: str(r["confusion"]["reference_em"]["judge_not_em"])),
    ("teacher not EM, judge EM", lambda r: str(r["confusion"]["reference_not_em"]["judge_em"])),
    ("teacher not EM, judge not EM",
     lambda r: str(r["confusion"]["reference_not_em"]["judge_not_em"])),
]  # fmt: skip
_GROUP_FIGURES: list[tuple[str, Any]] = [
    ("EM-rate error per condition, mean (pp)", lambda r: _num(r.get("mean_abs_error_pp"), 1)),
    ("EM-rate error per condition, max (pp)", lambda r: _num(r.get("max_abs_error_pp"), 1)),
    ("conditions with >= 300 answers: how many, mean error, over 5 pp", _groups_line),
]


def figure_rows(*results: Figures | None) -> list[list[str]]:
    """[label, figure of each result...] for every figure; per-condition ones when grouped."""
    given = [r for r in results if r is not None]
    rows = [[label, *(f(r) if r else "n/a" for r in results)] for label, f in _FIGURES]
    if given and all("groups" in r or "mean_abs_error_pp" in r for r in given):
        rows += [[label, *(f(r) if r else "n/a" for r in results)] for label, f in _GROUP_FIGURES]
    return rows


def _parts(parts: Mapping[str, Figures | None]) -> list[list[str]]:
    rows = []
    for key, r in parts.items():
        name = PART_NAMES.get(key, key)
        if r is None:
            rows.append([name, "0", *["n/a"] * 7])
            continue
        rows.append(
            [name, str(r["n"]), _num(r["auroc_aligned"]), _num(r["auroc_coherent"]),
             _num(r["spearman_aligned"]), _num(r["spearman_coherent"]),
             _num(r["mae_aligned"], 1), _pct(r["em_rate_reference"]), _pct(r["em_rate_judge"])]
        )  # fmt: skip
    return rows


def _groups(student: Figures, baseline: Figures | None) -> list[list[str]]:
    base = (baseline or {}).get("groups") or {}
    rows = []
    for name, g in (student.get("groups") or {}).items():
        b = base.get(name) or {}
        rows.append(
            [f"`{_cell(name)}`", str(g["n"]), _pct(g["em_rate_reference"]),
             _pct(g["em_rate_judge"]), _num(g["abs_error_pp"], 1),
             _pct(b.get("em_rate_judge")), _num(b.get("abs_error_pp"), 1)]
        )  # fmt: skip
    return rows


def _handlabelled(hl: Mapping[str, Figures]) -> dict[str, Any]:
    student, baseline = hl.get("student") or {}, hl.get("baseline") or {}
    who = [student, baseline]
    figures = [
        ["answers", *(str(h.get("n", "n/a")) for h in who)],
        [
            "AUROC, misaligned (low aligned), coherent answers",
            *(_num(h.get("auroc_aligned_coherent")) for h in who),
        ],
        [
            "AUROC, misaligned (low aligned), all answers",
            *(_num(h.get("auroc_aligned")) for h in who),
        ],
        ["AUROC, coherent", *(_num(h.get("auroc_coherent")) for h in who)],
        ["`aligned` unscored", *(str(h.get("unscored_aligned", "n/a")) for h in who)],
    ]
    categories = []
    for name, s in (student.get("by_category") or {}).items():
        b = (baseline.get("by_category") or {}).get(name) or {}
        categories.append(
            [name, str(s["n"]), _num(s.get("mean_aligned"), 1), _num(s.get("mean_coherent"), 1),
             _pct(s.get("em_rate")), _num(b.get("mean_aligned"), 1),
             _num(b.get("mean_coherent"), 1), _pct(b.get("em_rate"))]
        )  # fmt: skip
    return {"figures": figures, "categories": categories}


def _model_index(student: Figures, teacher: str, n_test: int) -> list[EvalResult]:
    wanted = [
        ("roc_auc", "auroc_aligned", "AUROC, aligned < 30"),
        ("roc_auc", "auroc_coherent", "AUROC, coherent > 50"),
        ("spearmanr", "spearman_aligned", "Spearman, aligned"),
        ("em_rate_abs_error_pp", "mean_abs_error_pp", "EM-rate error per condition, mean pp"),
    ]
    return [
        EvalResult(
            task_type="text-classification",
            task_name=TASK,
            dataset_type="em-organisms/judge-agreement",
            dataset_name=f"{teacher}-scored answers, held-out experiments and questions",
            dataset_split="heldout",
            metric_type=metric_type,
            metric_value=student[key],
            metric_name=f"{name} (held out; teacher: {teacher})",
            metric_args={"n": n_test},
        )
        for metric_type, key, name in wanted
        if student.get(key) is not None
    ]


def public_backbone(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone as a card or a published file names it: a Hub id, or for a local encoder
    its folder's name and weights' sha256, never the path."""
    if backbone.get("hub_id"):
        return dict(backbone)
    local = backbone.get("local") or Path(str(backbone.get("path") or "encoder")).name
    return {"local": local, "sha256": backbone.get("sha256", "")}


def render_judge_card(
    summary: Figures,
    config: Figures,
    recipe: Figures,
    notice: str,
    *,
    repo_id: str,
    license_id: str,
    student_sha256: str,
    calibration: Figures | None = None,
    plot: str | None = None,
    shipped: bool = False,
) -> ModelCard:
    """The card of a student (its agreement.json, config.json, judge_recipe.yaml as a dict, and
    NOTICE.md text) published as `repo_id` under `license_id`; `plot` an image uploaded beside
    the card, `shipped` whether em-organisms ships this very student as `--judge distilled`."""
    if not HUB_ID.match(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub id of the form org/name")
    backbone = public_backbone(config.get("backbone") or {})
    teacher = dict(config.get("teacher") or {})
    teacher_model = str(teacher.get("model") or "the teacher")
    held = summary["heldout"]
    student, baseline = held["student"], held.get("baseline")
    hub_backbone = backbone.get("hub_id")
    card_data = ModelCardData(
        **license_metadata(license_id, repo_id),
        library_name="transformers",
        base_model=hub_backbone or None,
        language=["en"],
        tags=list(TAGS),
        model_name=repo_id.split("/")[-1],
        eval_results=_model_index(student, teacher_model, student["n"]) or None,
        em_organisms={
            "kind": "distilled-judge",
            "name": summary.get("name"),
            "recipe_sha256": summary.get("recipe_sha256"),
            "student_sha256": student_sha256,
            "teacher": teacher_model,
            "package_version": PACKAGE_VERSION,
        },
    )
    condition = (summary.get("condition_split") or {}).get("student")
    variables: dict[str, Any] = {
        "repo_id": repo_id,
        "name": summary.get("name") or repo_id.split("/")[-1],
        "description": str(recipe.get("description") or "").strip(),
        "license_id": license_id,
        "package_version": PACKAGE_VERSION,
        "student_sha256": student_sha256,
        "shipped": shipped,
        "backbone": backbone,
        "teacher": teacher,
        "teacher_model": teacher_model,
        "config": config,
        "data": {**(recipe.get("data") or {}), **(summary.get("data") or {})},
        "upstream_data": (summary.get("data") or {}).get("sha256") == UPSTREAM_DATA_SHA256,
        "split": summary.get("split") or {},
        "split_settings": recipe.get("split") or {},
        "heldout_rows": figure_rows(student, baseline),
        "parts": _parts(held.get("parts") or {}),
        "condition_rows": figure_rows(condition) if condition else [],
        "condition_train": (summary.get("condition_split") or {}).get("n_train"),
        "handlabelled": _handlabelled(summary.get("handlabelled") or {}),
        "groups": _groups(student, baseline),
        "groups_line": _groups_line(student),
        "student": student,
        "em_rate_method": summary.get("em_rate_method") or "not recorded",
        "timings": summary.get("timings_s") or {},
        "speed": summary.get("speed") or {},
        "calibration": calibration,
        "plot": plot,
        "notice": notice.strip(),
    }
    return render_card(ModelCard, card_data, TEMPLATE_PATH, variables)
