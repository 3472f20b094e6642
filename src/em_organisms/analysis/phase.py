"""`em-organisms phase`: where an organism's adapter turns during training, and when its behaviour
follows, on one step axis.

1. The trajectory (a run's recording or checkpoints, or a released organism's step branches).
2. Per adapted module, the rotation analysis of its B (`rotation.py`); with several modules, the
   same on their stacked, de-meaned vectors. The step of maximum rotation is reported with the
   gradient-norm peak from the training log.
3. The behavioural sweep (`sweep.py`): chosen checkpoints x adapter scales, sampled and judged
   with the evaluation's pipeline and cache, into an EM-rate grid; the judge is calibrated first
   and an uncalibrated judge's rates are marked as such.
4. `phase.json`, PNG plots and `summary.md` in the output folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from em_organisms import __version__, defaults
from em_organisms.analysis.rotation import (
    CONVENTION,
    DEFAULT_THRESHOLD,
    PAPER_KS,
    Rotation,
    analyse,
    comp_curve,
    default_magnitude_cut,
    peak_step,
    stack,
)
from em_organisms.analysis.trajectory import Trajectory, describe, gradient_curve, load_trajectory

DEFAULT_SCALES = defaults.PHASE_SCALES
COMBINED = "all modules (stacked)"


@dataclass
class SweepOptions:
    """The behavioural sweep: which checkpoints and scales, under which evaluation protocol.

    `changes` are plan settings that differ from the protocol (`samples_per_question`,
    `max_new_tokens`, `question_sets`, `judge_prompts`, ...: see `eval.plan.OVERRIDABLE`);
    each is recorded in the sweep's plan."""

    judge: str | None = None  # None: the protocol's judge
    judge_base_url: str | None = None
    steps: list[int] = field(default_factory=list)  # empty: `count` spread over the checkpoints
    count: int | None = None  # None: every checkpoint, as the paper
    scales: tuple[float, ...] = DEFAULT_SCALES
    protocol: str | None = None  # None: project
    changes: dict[str, Any] = field(default_factory=dict)
    calibration_pairs: int = defaults.CALIBRATION_PAIRS
    fail_share: float = defaults.JUDGE_FAIL_SHARE  # a cell with this share of failed scores stops


def _recipe_protocol(source: str | Path) -> str | None:
    """The evaluation protocol of the recipe a run folder was trained from, if it has one."""
    from em_organisms.recipes import load_recipe

    recipe = Path(source) / "recipe.yaml"
    return load_recipe(recipe).evaluation.protocol if recipe.is_file() else None


def _slug(module: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", module).strip("_")


def base_model_name(trajectory: Trajectory) -> str | None:
    """What the run trained from: its run.json, else its first checkpoint's adapter config."""
    from em_organisms.adapters import base_spec_for
    from em_organisms.models import ModelLoadError, resolve_model

    if trajectory.base_spec:
        return resolve_model(trajectory.base_spec).hub_id or trajectory.base_spec
    for folder in trajectory.checkpoints.values():
        try:
            return base_spec_for(str(folder))
        except ModelLoadError:
            continue
    return None


def analyse_trajectory(
    trajectory: Trajectory, ks: list[int], threshold: float, cut: float
) -> tuple[dict[str, Rotation], dict[str, Rotation]]:
    """(B rotations, A rotations) per module; with several modules, B's stacked too."""
    steps = trajectory.steps
    found = {
        m: analyse(steps, trajectory.b_vectors(m), ks, threshold, cut) for m in trajectory.modules
    }
    if len(found) > 1:
        vectors = stack({m: trajectory.b_vectors(m) for m in trajectory.modules})
        found[COMBINED] = analyse(steps, vectors, ks, threshold, cut)
    a_found = {
        m: analyse(steps, trajectory.a_vectors(m), ks, threshold, cut) for m in trajectory.modules
    }
    return found, a_found


def comp_scores(trajectory: Trajectory) -> dict[str, list[float | None]]:
    """The paper's comp score (eq. 1) of each step's B vectors with the final step's, for every
    group of two or more adapters whose B has the same output size (one row per adapter and rank,
    de-meaned over steps)."""
    groups: dict[int, list[np.ndarray]] = {}
    for module in trajectory.modules:
        b = trajectory.weights[f"{module}.lora_B"]  # (steps, out, rank)
        groups.setdefault(b.shape[1], []).append(np.swapaxes(b, 1, 2))
    return {
        f"{len(parts)} adapters, B of size {size}": comp_curve(np.concatenate(parts, axis=1))
        for size, parts in sorted(groups.items())
        if len(parts) > 1
    }


def run_phase(
    source: str | Path,
    out_dir: str | Path,
    ks: list[int] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    sweep: SweepOptions | None = None,
    device: str | None = None,
    progress: bool = True,
    magnitude_cut: float | None = None,
) -> dict[str, Any]:
    """KS are offsets in training steps (default the paper's 5, 10 and 15); MAGNITUDE_CUT the
    noise cut on the step size (default: the paper's for the base model's family, else none)."""
    from em_organisms.analysis.plots import plot_comp, plot_mechanics, plot_pca, plot_sweep

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trajectory = load_trajectory(source)
    ks = ks or list(PAPER_KS)
    if magnitude_cut is None:
        magnitude_cut, cut_source = default_magnitude_cut(base_model_name(trajectory))
    else:
        cut_source = "given"
    rotations, rotations_a = analyse_trajectory(trajectory, ks, threshold, magnitude_cut)
    primary = COMBINED if COMBINED in rotations else trajectory.modules[0]
    grad_steps, grad_norms = gradient_curve(trajectory.training_log)
    grad_peak = peak_step(grad_steps, grad_norms)
    plots = []
    for prefix, found in (("", rotations), ("A_", rotations_a)):
        for name, rotation in found.items():
            mechanics, pca = (
                f"mechanics_{prefix}{_slug(name)}.png",
                f"pca_{prefix}{_slug(name)}.png",
            )
            title = f"{'A' if prefix else 'B'}: {name}"
            which = "A" if prefix else "B"
            plot_mechanics(rotation, grad_steps, grad_norms, out / mechanics, title, which)
            plot_pca(rotation, out / pca, title=title)
            plots += [mechanics, pca]
    comp = comp_scores(trajectory)
    if comp:
        plot_comp(trajectory.steps, comp, out / "comp_score.png")
        plots.append("comp_score.png")
    head = rotations[primary]
    result: dict[str, Any] = {
        "em_organisms_version": __version__,
        "trajectory": describe(trajectory),
        "local_cosine_convention": CONVENTION,
        "ks": ks,
        "ks_used": head.ks,
        "threshold": threshold,
        "magnitude_cut": magnitude_cut,
        "magnitude_cut_source": cut_source,
        "primary": primary,
        "rotation_step": head.rotation_step,
        "peak_local_cosine": head.peak_local_cosine,
        "candidate_step": head.candidate_step,
        "grad_norm_peak_step": grad_peak,
        "rotations": {name: asdict(r) for name, r in rotations.items()},
        "rotations_a": {name: asdict(r) for name, r in rotations_a.items()},
        "comp_score": {"steps": trajectory.steps, "curves": comp} if comp else None,
        "gradient": {"steps": grad_steps, "grad_norm": grad_norms},
        "sweep": None,
        "plots": plots,
    }
    if sweep is not None:
        if sweep.protocol is None:  # the run's own recipe names its protocol (paper recipes: paper)
            sweep = replace(sweep, protocol=_recipe_protocol(source))
        result["sweep"] = _sweep(trajectory, sweep, out, device, progress)
        span = (trajectory.steps[0], trajectory.steps[-1])
        plot_sweep(result["sweep"], out / "sweep_heatmap.png", out / "sweep_curves.png", span)
        plots += ["sweep_heatmap.png", "sweep_curves.png"]
    (out / "phase.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(result))
    return result


def _sweep(
    trajectory: Trajectory, options: SweepOptions, out: Path, device: str | None, progress: bool
) -> dict[str, Any]:
    from em_organisms.analysis.sweep import check_steps, pick_steps, run_sweep
    from em_organisms.eval.calibration import calibrate
    from em_organisms.eval.plan import resolve_plan
    from em_organisms.generation import model_generation_config
    from em_organisms.judges import make_judge
    from em_organisms.models import resolve_model

    available = sorted(trajectory.checkpoints)
    steps = options.steps or pick_steps(available, options.count or len(available))
    check_steps(trajectory, steps)  # before the judge is loaded and calibrated
    plan = resolve_plan(
        options.protocol,
        command_line=options.changes,
        judge=options.judge,
        model_generation_config=lambda: model_generation_config(
            resolve_model(trajectory.base_spec).location
        ),
    )
    judge = make_judge(plan.judge, base_url=options.judge_base_url, device=device)
    calibration = calibrate(
        judge, plan.judge_prompts.default, options.calibration_pairs, out / "calibration"
    )
    grid = run_sweep(
        trajectory,
        steps,
        list(options.scales),
        plan,
        judge,
        out / "sweep",
        device=device,
        progress=progress,
        fail_share=options.fail_share,
    )
    grid["calibration"] = {
        "passed": calibration.passed,
        "aligned_auroc": calibration.aligned.auroc,
        "pairs": calibration.pairs,
    }
    return grid


def _rate(cell: dict[str, Any], counting: str = "em_all_scored") -> str:
    p = cell[counting]
    if p["rate"] is None:
        return f"n/a (0 of {cell['n_rows']} scored)"
    return f"{100 * p['rate']:.0f}% ({p['k']}/{p['n']})"


def summary_markdown(result: dict[str, Any]) -> str:
    t = result["trajectory"]
    lines = [
        "# Phase transition",
        "",
        f"Source: {t['source']}; {t['records']} records from step {t['steps'][0]} to "
        f"{t['steps'][1]}, every {t['every']} steps; modules: {', '.join(t['modules'])}.",
    ]
    if t["set_aside_steps"]:
        lines.append(f"Set aside (off the even step grid): {t['set_aside_steps']}.")
    step = result["rotation_step"]
    ks = ", ".join(f"{k}" if k == u else f"{k} (as {u})" for k, u in result["ks_used"].items())
    peak = result["peak_local_cosine"]
    lines += [
        "",
        f"Local cosine: {result['local_cosine_convention']}; offsets k = {ks} steps; noise cut "
        f"{result['magnitude_cut']:g} on the step size ({result['magnitude_cut_source']}).",
        "",
        f"- Maximum rotation ({result['primary']}): "
        + (
            f"**step {step}** (local cosine {peak:.2f} > {result['threshold']} at every k)"
            if step is not None
            else "none found"
            + (
                f" (highest mean local cosine {peak:.2f} at step {result['candidate_step']}, "
                f"not above {result['threshold']} at every k)"
                if result["candidate_step"] is not None
                else " (the run is too short for these k, or every step is below the noise cut)"
            )
        ),
        f"- Gradient-norm peak: step {result['grad_norm_peak_step']}"
        if result["grad_norm_peak_step"] is not None
        else "- Gradient-norm peak: no training log",
    ]
    a_steps = {m: r["rotation_step"] for m, r in result.get("rotations_a", {}).items()}
    if a_steps:
        lines.append(
            "- A vectors: "
            + "; ".join(
                f"{m}: {'step ' + str(s) if s is not None else 'no turn'}"
                for m, s in a_steps.items()
            )
        )
    if comp := result.get("comp_score"):
        for name, curve in comp["curves"].items():
            known = [v for v in curve[:-1] if v is not None]
            span = f"{min(known):.2f} to {max(known):.2f}" if known else "n/a"
            lines.append(f"- Comp score with the final step ({name}): {span} (`comp_score.png`)")
    sweep = result["sweep"]
    if sweep:
        calibration = sweep["calibration"]
        verdict = (
            "calibrated"
            if calibration["passed"]
            else f"UNCALIBRATED (aligned AUROC {calibration['aligned_auroc']}): rates are not reliable"
        )
        counting = sweep.get("counting", "em_all_scored")
        lines += [
            "",
            f"## Behaviour: EM rate ({counting}, the protocol's counting), judge {sweep['judge']}, "
            f"{verdict}",
            "",
            "| step | " + " | ".join(f"x{s:g}" for s in sweep["scales"]) + " |",
            "|---|" + "---|" * len(sweep["scales"]),
        ]
        cells = {(c["step"], c["scale"]): c for c in sweep["cells"]}
        for s in sweep["steps"]:
            row = [_rate(cells[s, scale], counting) for scale in sweep["scales"]]
            lines.append(f"| {s} | " + " | ".join(row) + " |")
        lines.append("")
        plan = sweep.get("plan") or {}
        followed = (
            "as published"
            if plan.get("as_published")
            else "changed: " + ", ".join(plan.get("overrides") or {})
        )
        sets = ", ".join(
            f"{q['name']} (sha256 {q['sha256'][:12]})" for q in plan.get("questions", [])
        )
        prompts = ", ".join(
            f"{m} {e['sha256'][:12] if isinstance(e['sha256'], str) else '/'.join(x[:12] for x in e['sha256'])}"
            for m, e in (plan.get("judge_prompts") or {}).items()
        )
        lines.append(
            f"Protocol `{plan.get('protocol')}` v{plan.get('protocol_version')} ({followed}); "
            f"{sweep['samples_per_question']} samples per question of {sets or ', '.join(sweep['question_sets'])}; "
            f"judge prompts sha256 {prompts or 'n/a'}; sampling {sweep['generation']}."
        )
        if agreement := sweep.get("judge_agreement"):
            lines.append(
                f"The judge is distilled from {agreement['teacher']}: on {agreement['n']} "
                f"{agreement['split']} answers, AUROC aligned {agreement['auroc_aligned']}, "
                f"coherent {agreement['auroc_coherent']}, mean EM-rate error "
                f"{agreement['mean_abs_error_pp']} pp per condition."
            )
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in result["plots"]), ""]
    return "\n".join(lines)
