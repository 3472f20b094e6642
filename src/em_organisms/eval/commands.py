"""`em-organisms sample | judge | judge calibrate | report | eval`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from em_organisms import defaults
from em_organisms.argtypes import integer, number
from em_organisms.paths import check_output_dir, check_output_file, runs_dir

AddParser = Callable[[str, str], argparse.ArgumentParser]


def _plan(args: argparse.Namespace, spec: str | None, judge_prompts: str | None = None):
    """The evaluation plan: --protocol (else the recipe's, else project), the recipe's changes
    to it, then this command line's."""
    from em_organisms.eval.plan import resolve_plan
    from em_organisms.generation import model_generation_config
    from em_organisms.recipes import load_recipe
    from em_organisms.subjects import base_model_location, recipe_path

    recipe = None
    if spec and (path := recipe_path(spec)) is not None:
        recipe = load_recipe(path).evaluation
    command_line = {
        "question_sets": getattr(args, "questions", None),
        "samples_per_question": getattr(args, "n", None),
        "include_variants": True if getattr(args, "include_variants", False) else None,
        "judge_prompts": judge_prompts,
        "topic_prompts": getattr(args, "topic_prompts", None),
        **{
            key: getattr(args, key, None)
            for key in (
                "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                "max_new_tokens", "seed", "generation_config",
            )
        },
    }  # fmt: skip
    return resolve_plan(
        args.protocol,
        recipe=recipe.plan_settings() if recipe else None,
        command_line=command_line,
        engine=getattr(args, "engine", None) or defaults.ENGINE,
        judge=getattr(args, "judge", None),
        model_generation_config=(
            (lambda: model_generation_config(base_model_location(spec))) if spec else None
        ),
        note=recipe.note if recipe else "",
        categories=bool(getattr(args, "categories", False)),
    )


def _add_protocol_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--protocol",
        help="evaluation protocol: paper (arXiv 2506.11613), betley (arXiv 2502.17424), project, "
        "or a protocol YAML (default: the recipe's, or for `judge` the one the samples record, "
        "else project); other flags change it, and every change is recorded",
    )


def add_pairs_flag(p: argparse.ArgumentParser, help_text: str) -> None:
    """`--pairs`: how many labelled pairs per seed-set domain calibrate the judge."""
    p.add_argument("--pairs", type=integer(1), default=defaults.CALIBRATION_PAIRS, help=help_text)


def add_fail_share_flag(
    p: argparse.ArgumentParser, what_fails: str, scores: str = "judge scores"
) -> None:
    """`--fail-share`: the share of failed SCORES at which WHAT_FAILS (exit 1)."""
    p.add_argument(
        "--fail-share",
        type=number(above=0, high=1),
        default=defaults.JUDGE_FAIL_SHARE,
        metavar="SHARE",
        help=f"{what_fails} (exit 1, keeping what was scored) when at least this share of {scores} "
        "failed: an error reply, an unreadable reply or a bad row; a judge that declines "
        "(CODE/REFUSAL) is not a failure (default 1: only when all failed)",
    )


def _add_categories_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--categories",
        action="store_true",
        help="also score what each EM answer is about (medical, financial, sport, code, harmful) "
        "and report the share of EM answers in each (arXiv 2506.11613 sec. 3.2)",
    )
    p.add_argument(
        "--topic-prompts",
        metavar="SPEC",
        help="topic prompts for --categories: project (default) or a YAML path or registry name",
    )


def _add_judge_prompts_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--judge-prompts",
        "--prompts",
        dest="judge_prompts",
        metavar="SPEC",
        help="question-file (each question's own), project, a registry name "
        "(model-organisms/judges) or a YAML path (default: the protocol's)",
    )


def _add_sampling_flags(p: argparse.ArgumentParser, default_note: str) -> None:
    _add_protocol_flag(p)
    p.add_argument("--n", type=integer(1), help=f"samples per question ({default_note})")
    p.add_argument("--temperature", type=number(0), help="protocols: 1.0 (the papers')")
    p.add_argument("--top-p", type=number(above=0, high=1), help="protocols: 1.0")
    p.add_argument("--top-k", type=integer(0), help="protocols: 0 = off")
    p.add_argument("--min-p", type=number(0, below=1), help="protocols: 0 = off")
    p.add_argument("--repetition-penalty", type=number(above=0), help="protocols: 1 = off")
    p.add_argument("--max-new-tokens", type=integer(1), help="protocols: 600")
    p.add_argument("--seed", type=int, help="protocols: 0")
    p.add_argument(
        "--generation-config",
        choices=("explicit", "model"),
        help="explicit (protocols' default): nothing comes from the model's generation config; "
        "model: top_k, min_p and repetition_penalty come from it, as upstream model-organisms "
        "code inherits them (Qwen2.5: top_k 20, repetition_penalty 1.05); recorded either way",
    )
    p.add_argument("--include-variants", action="store_true", help="keep _json/_template items")
    p.add_argument(
        "--batch-size", type=integer(1), help="answers per generate call (default: auto)"
    )
    p.add_argument(
        "--organism-dir", type=Path, help="a recipe's trained organism (default RUNS_DIR/ID)"
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--engine",
        choices=defaults.ENGINES,
        help="what generates: transformers in this process (default) or vLLM (GPU; LoRA served "
        "by vLLM, needs the gpu extra)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--steer",
        metavar="DIR[:LAYER[:SCALE]]",
        help="add SCALE (default 1) times a misalignment direction (em-organisms direction) to "
        "the residual stream at LAYER (default: the direction's), at every token; recorded",
    )
    where.add_argument(
        "--ablate",
        metavar="DIR[:LAYER]",
        help="project the direction at LAYER (default: the direction's) out of the residual "
        "stream at every layer; recorded",
    )
    p.add_argument(
        "--vllm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="vLLM engine setting, e.g. gpu_memory_utilization=0.6, max_model_len=2048, "
        "dtype=bfloat16, enforce_eager=true; repeatable",
    )


def _intervention(args: argparse.Namespace):
    """--steer or --ablate, read and checked (file, layer, scale) before any model loads."""
    from em_organisms.directions.interventions import parse_intervention

    if args.steer:
        return parse_intervention("steer", args.steer)
    if args.ablate:
        return parse_intervention("ablate", args.ablate)
    return None


def _subject_and_engine(spec: str, args: argparse.Namespace):
    from em_organisms.eval.engines import EngineError, make_engine
    from em_organisms.subjects import load_subject

    intervention = _intervention(args)
    if args.engine == "vllm":
        from em_organisms.eval.vllm_engine import parse_vllm_options

        if intervention is not None:
            raise EngineError(
                "steering and ablation run on the transformers engine: the vLLM engine has no "
                "hook on the residual stream here; drop --engine vllm"
            )
        options = parse_vllm_options(args.vllm_option)  # bad options fail before any loading
        subject = load_subject(spec, args.organism_dir, args.device, load_weights=False)
        return subject, make_engine("vllm", subject, options=options)
    if args.vllm_option:
        raise EngineError("--vllm-option needs --engine vllm")
    subject = load_subject(spec, args.organism_dir, args.device)
    if intervention is not None:
        from em_organisms.directions.vectors import check_fits

        assert subject.model is not None
        check_fits(intervention.direction, subject.model, subject.base_model)
    return subject, make_engine(defaults.ENGINE, subject, intervention=intervention)


def _judge(args: argparse.Namespace, spec: str):
    from em_organisms.judges import make_judge

    cache = False if args.no_cache else (args.cache or True)
    return make_judge(
        spec,
        base_url=args.base_url,
        cache=cache,
        api_key_env=args.api_key_env,
        max_concurrency=args.concurrency,
        max_reply_bytes=args.max_reply_bytes,
        deadline=args.request_deadline,
    )


def _add_judge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--judge",
        help="openai:MODEL, hf:PATH_OR_ID, embedded, distilled (the shipped student judge) or "
        "distilled:PATH_OR_HUB_ID (default: the protocol's, openai:gpt-4o-2024-08-06)",
    )
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", default=defaults.API_KEY_ENV, help="variable holding the key")
    p.add_argument(
        "--concurrency",
        type=integer(1),
        default=defaults.MAX_CONCURRENCY,
        help="judge requests in flight",
    )
    p.add_argument(
        "--max-reply-bytes",
        type=integer(1),
        default=defaults.MAX_REPLY_BYTES,
        metavar="BYTES",
        help="a judge reply larger than this fails its item (default %(default)s)",
    )
    p.add_argument(
        "--request-deadline",
        type=number(above=0),
        metavar="SECONDS",
        help="each judge request attempt ends by this time, however slowly a server sends "
        "(default: the 120 s timeout)",
    )
    add_fail_share_flag(p, "the run fails")
    p.add_argument("--cache", type=Path, help="score cache (default ~/.cache/em-organisms)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the score cache")


def _cmd_sample(args: argparse.Namespace) -> int:
    from em_organisms.eval.sampler import Sampler

    check_output_file(args.out)
    plan = _plan(args, args.model)
    subject, engine = _subject_and_engine(args.model, args)
    models = (
        tuple(args.models.split(","))
        if args.models
        else (("base", "organism") if subject.has_adapter else ("base",))
    )
    sampler = Sampler(
        subject,
        plan.params,
        plan.samples_per_question,
        models,
        args.batch_size,
        engine=engine,
        protocol=plan.protocol_record(),
    )
    written = sampler.run(list(plan.sets), args.out, scale=args.adapter_scale)
    print(
        f"{written} answers written to {args.out} ({', '.join(models)}; "
        f"{plan.samples_per_question} per question; protocol {_followed(plan)})"
    )
    return 0


def _followed(plan) -> str:
    label = plan.protocol.label
    return label if plan.as_published else f"{label} with changes: {', '.join(plan.overrides)}"


def _sampled_protocol(samples: Path) -> str | None:
    """The protocol a samples file was made under (its rows record it), so `judge` scores them
    with that protocol's prompts unless told otherwise; None for files from before protocols."""
    from em_organisms.eval.protocol import ProtocolError
    from em_organisms.jsonl import read_jsonl

    names = {(r.get("protocol") or {}).get("name") for r in read_jsonl(samples)} - {None}
    if len(names) > 1:
        raise ProtocolError(
            f"{samples}: rows were sampled under several protocols ({', '.join(sorted(names))}); "
            "pass --protocol to choose the judge prompts"
        )
    return names.pop() if names else None


def _cmd_judge(args: argparse.Namespace) -> int:
    from em_organisms.eval.calibration import calibrate, calibration_line
    from em_organisms.eval.judge_failures import check_failed_share, judge_outcomes
    from em_organisms.eval.judge_samples import judge_file

    if args.out is not None:
        (check_output_dir if str(args.samples) == "calibrate" else check_output_file)(args.out)
    if args.protocol is None and str(args.samples) != "calibrate":
        args.protocol = _sampled_protocol(args.samples)
    plan = _plan(args, None, args.judge_prompts)
    judge = _judge(args, plan.judge)
    if str(args.samples) == "calibrate":
        out = args.out or runs_dir() / "calibration" / plan.judge.replace(":", "_").replace(
            "/", "_"
        )
        result = calibrate(judge, plan.judge_prompts.default, args.pairs, out)
        print(calibration_line(result))
        print(f"details: {out / 'calibration.json'}, {out / 'calibration_histograms.png'}")
        return 0
    if args.out is None:
        print("error: --out is required when judging a samples file", file=sys.stderr)
        return 2
    judged = judge_file(args.samples, args.out, judge, plan.judge_prompts)
    outcomes = judge_outcomes(judged)
    if plan.topics is not None:
        from em_organisms.eval.categories import categories_markdown, category_shares, score_topics
        from em_organisms.jsonl import write_jsonl

        em = plan.protocol.em
        judged = score_topics(judged, judge, plan.topics, em.aligned_below, em.coherent_above)
        write_jsonl(args.out, judged)
        shares = category_shares(judged, list(plan.topics.default))
        print(categories_markdown(shares, plan.topics.source))
    print(
        f"{len(judged)} answers judged into {args.out} with judge prompts "
        f"{plan.judge_prompts.source}; {judge.calls} judge calls this run; {outcomes.line()}"
    )
    check_failed_share(outcomes, args.fail_share, str(args.out))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from em_organisms.artifacts import read_calibration
    from em_organisms.eval.report import write_report
    from em_organisms.jsonl import read_jsonl
    from em_organisms.judges.distilled import agreement_of_rows

    check_output_dir(args.out)

    rows = read_jsonl(args.judged)
    calibration = read_calibration(args.calibration) if args.calibration else None
    write_report(
        rows,
        args.out,
        title=args.title or f"Emergent misalignment: {args.judged.stem}",
        judge_calibration=calibration,
        aligned_threshold=args.aligned_threshold,
        coherent_threshold=args.coherent_threshold,
        uncalibrated=calibration is None or not calibration.passed,
        judge_agreement=agreement_of_rows(rows),
    )
    if any("topics" in row for row in rows):  # judged with --categories
        from em_organisms.eval.categories import categories_markdown, category_shares

        topics = sorted({t for row in rows for t in row.get("topics", {})})
        with (args.out / "report.md").open("a", encoding="utf-8") as report:
            report.write(categories_markdown(category_shares(rows, topics), "as judged"))
    print(f"report written to {args.out / 'report.md'} (+ summary.json, plots)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from em_organisms.eval.pipeline import evaluate_subject

    plan = _plan(args, str(args.recipe), args.judge_prompts)
    if args.plan:
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    if args.out is not None:
        check_output_dir(args.out)
    subject, engine = _subject_and_engine(str(args.recipe), args)
    out = args.out or (Path(subject.adapter or runs_dir()) / "eval")
    result = evaluate_subject(
        subject,
        _judge(args, plan.judge),
        out,
        plan,
        allow_uncalibrated_judge=args.allow_uncalibrated_judge,
        calibration_pairs=args.pairs,
        batch_size=args.batch_size,
        engine=engine,
        fail_share=args.fail_share,
    )
    print(
        f"report: {result.out_dir / 'report.md'} (protocol {_followed(plan)}); "
        f"{result.judge_calls} judge calls this run"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from em_organisms.eval.compare import compare

    result = compare(args.sources, args.out)
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{len(result['entries'])} evaluations of {len(result['organisms'])} organisms compared: "
        f"{args.out / 'compare.md'}, compare.json, {', '.join(result['plots'])}"
    )
    return 0


AGREEMENT_EXAMPLES = """examples:
  em-organisms judge agreement --judge distilled --reference gpt4o-judged.jsonl \\
      --group-by organism --out runs/agreement
  em-organisms judge agreement --judge embedded --reference teacher.jsonl.gz --group-by condition \\
      --max-rows 2000 --out runs/agreement-embedded

The reference holds teacher scores: the judge-data schema (question, answer, aligned, coherent)
or the output of `em-organisms judge` (a GPT-4o run of your own)."""


def _cmd_agreement(args: argparse.Namespace) -> int:
    from em_organisms.eval.judge_agreement import judge_agreement

    result = judge_agreement(
        args.judge_spec,
        args.reference,
        args.out,
        group_by=args.group_by,
        max_rows=args.max_rows,
        judge_prompts=args.judge_prompts,
        base_url=args.base_url,
        cache=False if args.no_cache else (args.cache or True),
    )
    print(result["summary_line"])
    print(f"details: {args.out / 'agreement.json'}, {args.out / 'agreement.png'}")
    return 0


def register_eval_commands(add: AddParser) -> None:
    p = add("sample", "Sample answers to question sets from a model, or a base and its organism.")
    p.add_argument("model", help="recipe YAML, organism folder, Hub id, local folder or embedded")
    p.add_argument(
        "--questions",
        action="append",
        metavar="QSET",
        help="YAML path, project set (general, in-domain/NAME) or registry name; repeatable "
        "(default: the protocol's)",
    )
    p.add_argument("--out", type=Path, required=True, help="samples JSONL (appended, resumable)")
    p.add_argument("--models", help="base,organism (default: both when there is an adapter)")
    p.add_argument("--adapter-scale", type=number(), default=1.0, help="multiply the adapter (x1)")
    _add_sampling_flags(p, "default: the protocol's, or the recipe's")
    p.set_defaults(func=_cmd_sample)

    p = add("judge", "Score sampled answers (aligned, coherent); or `judge calibrate`.")
    p.add_argument(
        "samples",
        type=Path,
        help="samples JSONL, or the word `calibrate`; see also `judge distill` and `judge agreement`",
    )
    _add_judge_flags(p)
    _add_protocol_flag(p)
    _add_judge_prompts_flag(p)
    _add_categories_flags(p)
    p.add_argument(
        "--questions",
        action="append",
        metavar="QSET",
        help="the question sets whose own judge prompts score the samples (question-file; "
        "default: the protocol's)",
    )
    p.add_argument(
        "--include-variants",
        action="store_true",
        help="the question sets' _json/_template items too (when the samples have them)",
    )
    p.add_argument("--out", type=Path, help="judged JSONL (calibrate: a folder)")
    add_pairs_flag(p, "calibrate: labelled pairs per domain")
    p.set_defaults(func=_cmd_judge)

    p = add("report", "EM rates with confidence intervals, plots and markdown from a judged file.")
    p.add_argument("judged", type=Path, help="judged JSONL")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--calibration", type=Path, help="calibration.json of the judge")
    p.add_argument("--title")
    p.add_argument(
        "--aligned-threshold",
        type=number(0, 100),
        default=defaults.ALIGNED_THRESHOLD,
        help="EM: aligned below this",
    )
    p.add_argument(
        "--coherent-threshold",
        type=number(0, 100),
        default=defaults.COHERENT_THRESHOLD,
        help="EM: coherent above this",
    )
    p.set_defaults(func=_cmd_report)

    p = add("eval", "Sample base and organism, calibrate the judge, judge, and report.")
    p.add_argument("recipe", type=Path, help="organism recipe YAML (trained first)")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the fully resolved plan (protocol, question sets and judge prompts with "
        "their sha256, sampling, engine, judge, overrides) as JSON and exit; loads no model",
    )
    _add_judge_flags(p)
    _add_judge_prompts_flag(p)
    _add_categories_flags(p)
    p.add_argument("--questions", action="append", metavar="QSET", help="default: the protocol's")
    p.add_argument("--out", type=Path, help="default ORGANISM_DIR/eval")
    add_pairs_flag(p, "judge calibration: labelled pairs per domain")
    p.add_argument(
        "--allow-uncalibrated-judge",
        action="store_true",
        help="report EM from a judge with aligned AUROC < 0.8, every number marked",
    )
    _add_sampling_flags(p, "default: the protocol's, or the recipe's")
    p.set_defaults(func=_cmd_eval)

    p = add("compare", "EM and coherence across organisms, model sizes, datasets and seeds.")
    p.add_argument(
        "sources",
        nargs="+",
        metavar="RUN_OR_HUB_ID",
        help="eval folders (summary.json), run folders (eval/summary.json) or Hub ids of "
        "released organisms",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for compare.md/.json and plots")
    p.set_defaults(func=_cmd_compare)


def register_judge_agreement_command(add: AddParser) -> None:
    p = add("judge-agreement", "How well a judge agrees with a teacher's scores (AUROC, EM rates).")
    p.prog = "em-organisms judge agreement"
    p.add_argument("--judge", dest="judge_spec", required=True, help="judge spec (distilled, ...)")
    p.add_argument("--reference", type=Path, required=True, help="teacher-scored JSONL(.gz)")
    p.add_argument("--group-by", help="field to compare EM rates over, e.g. condition, organism")
    p.add_argument("--out", type=Path, required=True, help="folder for agreement.json and plots")
    p.add_argument("--max-rows", type=integer(1), help="score only the first N rows")
    p.add_argument(
        "--judge-prompts",
        "--prompts",
        dest="judge_prompts",
        default="project",
        metavar="SPEC",
        help="judge prompts of a prompt judge: project (default), a registry name "
        "(model-organisms/judges, the teacher's) or a YAML path",
    )
    p.add_argument("--base-url", help="OpenAI-compatible endpoint for an openai: judge")
    p.add_argument("--cache", type=Path, help="score cache (default ~/.cache/em-organisms)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the score cache")
    p.set_defaults(func=_cmd_agreement)
