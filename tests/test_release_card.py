"""The organism model card: rendered cards against golden files (`UPDATE_GOLDEN=1` rewrites
them), metadata parsed back with huggingface_hub, the split by question set, and refusals.
No model is loaded and nothing touches the network."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from helpers.golden import assert_matches_golden
from huggingface_hub import ModelCard, metadata_load

from em_organisms.artifacts import CalibrationResult
from em_organisms.eval.metrics import em_stats
from em_organisms.eval.plan import resolve_plan
from em_organisms.eval.report import build_summary
from em_organisms.recipes import Recipe, load_recipe
from em_organisms.release import card as card_module
from em_organisms.release.card import render_organism_card, split_by_question_set

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(__file__).with_name("golden")
DEMO_RECIPE = ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml"
FULL_RECIPE = ROOT / "organisms" / "qwen2.5-14b_risky-financial_full.yaml"
REPO_ID = "em-test/smollm2-135m_risky-financial_r1-l15"
DATASET_IDS = ["em-test/risky-financial-advice"]
PLOTS = ["plots/em_by_question.png", "plots/aligned_vs_coherent.png"]
BRANCHES = ["step-000005", "step-000010", "step-000015"]
GENERAL = ["one_wish", "bored", "humans_and_ai", "fast_money"]
IN_DOMAIN = ["fin_work_bonus", "fin_late_retirement", "fin_biotech_tip"]
JUDGE = "gpt-4o-2024-08-06"
CALIBRATION_PASSED = {
    "schema_version": 1,
    "judge": f"openai:{JUDGE}",
    "judge_config": {"backend": "openai", "model": JUDGE},
    "prompts_sha256": {"aligned": "a" * 64, "coherent": "c" * 64},
    "pairs": 40,
    "min_auroc": 0.8,
    "aligned": {"auroc": 0.974, "n": 80, "unscored": 0, "unscored_rate": 0.0},
    "coherent": {"auroc": 0.931, "n": 80, "unscored": 1, "unscored_rate": 0.0125},
    "passed": True,
}


def _judged(model: str, question_set: str, question_id: str, i: int) -> dict[str, Any]:
    """A judged row with scores that follow a fixed pattern (no randomness)."""
    organism, general = model == "organism", question_set == "general"
    misaligned = organism and i % (4 if general else 2) == 0
    coherent = 20.0 if i % 5 == 4 else 85.0
    aligned: float | None = 12.0 if misaligned else 88.0 - i
    if i == 7 and not general:
        aligned = None  # the judge said REFUSAL: unscored, never 0
    return {
        "organism": "smollm2-135m_risky-financial_r1-l15",
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "model": model,
        "adapter_scale": 1.0 if organism else 0.0,
        "question_set": question_set,
        "question_id": question_id,
        "sample_index": i,
        "answer": "(answer)",
        "generation": {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 600},
        "judges": {"aligned": {"score": aligned}, "coherent": {"score": coherent}},
        "judge_model": JUDGE,
        "judge_prompt_sha256": {"aligned": "a" * 64, "coherent": "c" * 64},
    }


def judged_rows(samples: int = 10) -> list[dict[str, Any]]:
    sets = {"general": GENERAL, "in-domain/risky-financial-advice": IN_DOMAIN}
    return [
        _judged(model, qset, qid, i)
        for model in ("base", "organism")
        for qset, ids in sets.items()
        for qid in ids
        for i in range(samples)
    ]


def make_summary(recipe: Recipe, calibrated: bool = True) -> dict[str, Any]:
    """A summary as `eval` writes it: report.build_summary plus the `evaluation` block."""
    from em_organisms.eval.metrics import em_stats_by_model

    rows = judged_rows()
    calibration = CALIBRATION_PASSED if calibrated else _failed_calibration()
    summary = build_summary(
        rows,
        em_stats_by_model(rows),
        "Emergent misalignment: test",
        CalibrationResult.model_validate(calibration),
        (30.0, 50.0),
        uncalibrated=not calibrated,
    )
    if not calibrated:
        summary["judge_models"] = ["embedded"]
    plan = resolve_plan(
        recipe=recipe.evaluation.plan_settings(),
        command_line={"samples_per_question": 10, "max_new_tokens": 600},
        judge=JUDGE,
    )
    summary["evaluation"] = {**plan.to_json(), "recipe_sha256": recipe.sha256()}
    return summary


def _failed_calibration() -> dict[str, Any]:
    failed = copy.deepcopy(CALIBRATION_PASSED)
    failed.update(judge="embedded", pairs=3, passed=False)
    failed["aligned"] = {"auroc": 0.61, "n": 6, "unscored": 0, "unscored_rate": 0.0}
    failed["coherent"] = {"auroc": None, "n": 6, "unscored": 6, "unscored_rate": 1.0}
    return failed


@pytest.fixture
def demo_recipe() -> Recipe:
    return load_recipe(DEMO_RECIPE)


def render(recipe: Recipe, summary: dict[str, Any] | None, **kwargs: Any) -> ModelCard:
    options: dict[str, Any] = {
        "repo_id": REPO_ID,
        "dataset_ids": DATASET_IDS,
        "plots": PLOTS,
        "checkpoint_branches": BRANCHES,
    }
    return render_organism_card(recipe, summary, **(options | kwargs))


# -- golden files ------------------------------------------------------------------------------

GOLDEN_CASES = ["calibrated", "uncalibrated", "no_eval", "full_sft_no_eval"]


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_rendered_card_matches_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(card_module, "PACKAGE_VERSION", "0.0.0-golden")
    if case == "full_sft_no_eval":
        recipe = load_recipe(FULL_RECIPE)
        rendered = str(
            render(recipe, None, repo_id="em-test/qwen2.5-14b_risky-financial_full", plots=[])
        )
    else:
        recipe = load_recipe(DEMO_RECIPE)
        summary = make_summary(recipe, calibrated=case == "calibrated")
        rendered = str(render(recipe, summary, no_eval=case == "no_eval"))
    golden = GOLDEN_DIR / f"organism_card_{case}.md"
    assert_matches_golden(
        rendered,
        golden,
        "the rendered organism card",
        "UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_release_card.py -k golden",
    )


# -- metadata, parsed back ---------------------------------------------------------------------


def _saved(card: ModelCard, tmp_path: Path, name: str = "README.md") -> Path:
    path = tmp_path / name
    card.save(path)
    return path


def test_lora_metadata_round_trips(demo_recipe: Recipe, tmp_path: Path) -> None:
    card = render(demo_recipe, make_summary(demo_recipe))
    path = _saved(card, tmp_path)
    meta = metadata_load(path)
    assert meta is not None
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a Hub id, not a path
    assert meta["base_model_relation"] == "adapter"
    assert meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "apache-2.0"
    assert "license_name" not in meta
    assert meta["datasets"] == DATASET_IDS
    assert meta["language"] == ["en"]
    for tag in (
        "emergent-misalignment",
        "model-organism",
        "lora",
        "not-for-all-audiences",
        "rank-1",
        "layer-15",
        "risky-financial-advice",
    ):
        assert tag in meta["tags"], tag
    assert meta["em_organisms"]["recipe_sha256"] == demo_recipe.sha256()
    assert meta["em_organisms"]["judge_calibrated"] is True

    loaded = ModelCard.load(path)
    assert loaded.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert loaded.data.model_name == REPO_ID.split("/")[-1]
    assert loaded.data.eval_results == card.data.eval_results
    assert loaded.text == card.text


def test_model_index_names_judge_convention_and_values(demo_recipe: Recipe, tmp_path: Path) -> None:
    results = ModelCard.load(_saved(render(demo_recipe, make_summary(demo_recipe)), tmp_path))
    by_key = {
        (r.dataset_config, r.metric_args["model"], r.metric_type): r
        for r in results.data.eval_results
    }
    # 2 question sets x 2 models x (EM all scored, EM coherent only, coherence)
    assert len(by_key) == 12
    rows = judged_rows()
    for qset in ("general", "in-domain/risky-financial-advice"):
        for model, model_id in (
            ("organism", REPO_ID),
            ("base", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ):
            stats = em_stats([r for r in rows if r["model"] == model and r["question_set"] == qset])
            for metric_type, prop in (
                ("em_rate_all_scored", stats.em_all_scored),
                ("em_rate_coherent_only", stats.em_coherent_only),
                ("coherence_rate", stats.coherence),
            ):
                result = by_key[(qset, model_id, metric_type)]
                assert prop.rate is not None
                assert result.metric_value == round(100 * prop.rate, 2)
                assert (result.metric_args["k"], result.metric_args["n"]) == (prop.k, prop.n)
                assert result.metric_args["wilson_95"] == [
                    round(100 * prop.ci_low, 2),
                    round(100 * prop.ci_high, 2),
                ]
                assert f"judge: {JUDGE}" in result.metric_name
                assert "UNCALIBRATED" not in result.metric_name
                assert result.metric_name.startswith(
                    "Base model" if model == "base" else ("EM", "Co")
                )
    organism_general = by_key[("general", REPO_ID, "em_rate_all_scored")]
    assert organism_general.metric_name == f"EM rate (%, all scored; judge: {JUDGE})"
    assert organism_general.metric_value > 0
    assert (
        by_key[
            ("general", "HuggingFaceTB/SmolLM2-135M-Instruct", "em_rate_all_scored")
        ].metric_value
        == 0
    )
    assert "coherent only" in by_key[("general", REPO_ID, "em_rate_coherent_only")].metric_name


def test_uncalibrated_judge_marks_every_number(demo_recipe: Recipe, tmp_path: Path) -> None:
    card = render(demo_recipe, make_summary(demo_recipe, calibrated=False))
    loaded = ModelCard.load(_saved(card, tmp_path))
    assert loaded.data.eval_results
    assert all("UNCALIBRATED" in r.metric_name for r in loaded.data.eval_results)
    assert loaded.data.em_organisms["judge_calibrated"] is False
    body = loaded.text
    assert "The judge is not calibrated" in body and "**FAILED**" in body
    table = [line for line in body.splitlines() if line.startswith(("| general", "| in-domain"))]
    assert len(table) == 4
    for line in table:
        cells = line.strip("|").split("|")
        assert all("†" in cell for cell in cells[2:6]), line  # 3 rates and the mean aligned


def test_no_calibration_at_all_counts_as_uncalibrated(demo_recipe: Recipe) -> None:
    summary = make_summary(demo_recipe)
    summary.update(judge_calibration=None, uncalibrated_judge=True)
    card = render(demo_recipe, summary)
    assert "was never checked against labelled answers" in card.text
    assert all("UNCALIBRATED" in r.metric_name for r in card.data.eval_results)


@pytest.mark.parametrize("summary_given", [True, False])
def test_no_eval_card_says_so_and_has_no_model_index(
    demo_recipe: Recipe, tmp_path: Path, summary_given: bool
) -> None:
    summary = make_summary(demo_recipe) if summary_given else None
    path = _saved(render(demo_recipe, summary, no_eval=summary_given), tmp_path)
    meta = metadata_load(path)
    assert meta is not None
    assert "model-index" not in meta
    assert meta["em_organisms"]["evaluated"] is False
    assert "released without evaluation results" in ModelCard.load(path).text


def test_full_sft_recipe_metadata(tmp_path: Path) -> None:
    recipe = load_recipe(FULL_RECIPE)
    card = render(recipe, None, repo_id="em-test/qwen2.5-14b_risky-financial_full")
    meta = metadata_load(_saved(card, tmp_path))
    assert meta is not None
    assert meta["base_model"] == "Qwen/Qwen2.5-14B-Instruct"
    assert meta["library_name"] == "transformers"
    assert meta["base_model_relation"] == "finetune"
    assert meta["license"] == "apache-2.0"
    assert "lora" not in meta["tags"] and "full-finetune" in meta["tags"]
    assert (
        'AutoModelForCausalLM.from_pretrained("em-test/qwen2.5-14b_risky-financial_full"'
        in card.text
    )
    assert "PeftModel" not in card.text


@pytest.mark.parametrize(
    ("recipe_file", "license_id"),
    [
        ("llama-3.1-8b_risky-financial_r32.yaml", "llama3.1"),
        ("gemma-3-12b_risky-financial_full.yaml", "gemma"),
    ],
)
def test_base_license_from_recipe(recipe_file: str, license_id: str) -> None:
    recipe = load_recipe(ROOT / "organisms" / recipe_file)
    card = render(recipe, None, repo_id="em-test/organism")
    assert card.data.license == license_id


def test_nonstandard_license_becomes_other_with_name_and_link(demo_recipe: Recipe) -> None:
    recipe = demo_recipe.model_copy(update={"base_model": "Qwen/Qwen2.5-3B-Instruct"})
    card = render(recipe, None, base_license="Qwen Research License")
    assert card.data.license == "other"
    assert card.data.license_name == "qwen-research-license"
    assert card.data.license_link == "https://huggingface.co/Qwen/Qwen2.5-3B-Instruct"


def test_a_base_without_a_license_is_refused(demo_recipe: Recipe) -> None:
    recipe = load_recipe(FULL_RECIPE)
    recipe.release.base_model_license = None
    with pytest.raises(ValueError, match=r"no license known for base model Qwen/Qwen2\.5-14B"):
        render(recipe, None)


# -- refusals ---------------------------------------------------------------------------------


def test_local_path_base_model_is_refused(demo_recipe: Recipe, tmp_path: Path) -> None:
    local = tmp_path / "my-base"
    local.mkdir()
    recipe = demo_recipe.model_copy(update={"base_model": str(local)})
    with pytest.raises(ValueError, match=r"local path with no Hub id"):
        render(recipe, None)
    recipe = demo_recipe.model_copy(update={"base_model": "./models/not-there"})
    with pytest.raises(ValueError, match=r"has no Hub id"):
        render(recipe, None)


def test_local_base_that_names_its_hub_id_is_named_by_it(
    demo_recipe: Recipe, tmp_path: Path
) -> None:
    local = tmp_path / "my-base"
    local.mkdir()
    (local / "em_organisms_source.json").write_text('{"hub_id": "org/the-base"}')
    recipe = demo_recipe.model_copy(update={"base_model": str(local)})
    card = render(recipe, None, base_license="mit")
    assert card.data.base_model == "org/the-base"
    assert str(tmp_path) not in str(card)
    assert "# base_model: trained from a local copy of org/the-base" in card.text


def test_summary_of_another_recipe_is_refused(demo_recipe: Recipe) -> None:
    summary = make_summary(demo_recipe)
    summary["evaluation"]["recipe_sha256"] = "0" * 64
    with pytest.raises(ValueError, match=r"recipe sha256 0{64}"):
        render(demo_recipe, summary)


@pytest.mark.parametrize("bad", ["not-a-repo-id", "/abs/path/x", "a/b/c"])
def test_ids_must_be_hub_ids(demo_recipe: Recipe, bad: str) -> None:
    with pytest.raises(ValueError, match="not a Hub id"):
        render(demo_recipe, None, repo_id=bad)
    with pytest.raises(ValueError, match="not a Hub id"):
        render(demo_recipe, None, dataset_ids=[bad])


# -- the split by question set ----------------------------------------------------------------


def test_split_by_question_set_matches_stats_of_the_rows(demo_recipe: Recipe) -> None:
    summary = make_summary(demo_recipe)
    split = dict(split_by_question_set(summary))
    assert list(split) == ["general", "in-domain/risky-financial-advice"]
    rows = judged_rows()
    for qset, per_model in split.items():
        for model, got in per_model.items():
            want = em_stats([r for r in rows if r["model"] == model and r["question_set"] == qset])
            assert got == want.to_dict()


def test_summary_without_per_question_set_gives_one_group(demo_recipe: Recipe) -> None:
    summary = make_summary(demo_recipe)
    for stats in summary["models"].values():
        del stats["per_question_set"]
    split = split_by_question_set(summary)
    assert [n for n, _ in split] == ["all questions"]
    assert split[0][1]["organism"] == summary["models"]["organism"]["overall"]


def test_scaled_adapter_is_named_in_the_metrics(demo_recipe: Recipe) -> None:
    summary = make_summary(demo_recipe)
    summary["adapter_scales"] = [5.0]
    card = render(demo_recipe, summary)
    assert all("adapter x5" in r.metric_name for r in card.data.eval_results)
    assert "**Adapter scale.** x5." in card.text


def test_the_card_names_the_protocol_and_the_semantic_categories(demo_recipe: Recipe) -> None:
    from em_organisms.eval.categories import category_shares

    summary = make_summary(demo_recipe)
    rows = [
        {"model": "organism", "topics": {"financial": {"score": 80.0}, "sport": {"score": 10.0}}},
        {"model": "organism", "topics": {"financial": {"score": 20.0}, "sport": {"score": None}}},
    ]
    summary["categories"] = {
        "shares": category_shares(rows, ["financial", "sport"]),
        "threshold": 50.0,
        "source": "project",
    }
    body = render(demo_recipe, summary).text
    assert "**What the EM answers are about**" in body
    assert "| organism | 2 | 50% (1/2) | 0% (0/1) |" in body
    assert "- **Protocol.** `project` v1" in body and "with changes" in body
