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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from em_organisms import __version__
from em_organisms.analysis.rotation import DEFAULT_THRESHOLD, Rotation, analyse, peak_step, stack
from em_organisms.analysis.trajectory import Trajectory, describe, gradient_curve, load_trajectory

DEFAULT_SCALES = (1.0, 5.0, 10.0, 20.0)
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
    count: int = 4
    scales: tuple[float, ...] = DEFAULT_SCALES
    protocol: str | None = None  # None: project
    changes: dict[str, Any] = field(default_factory=dict)
    calibration_pairs: int = 10


def default_ks(trajectory: Trajectory) -> list[int]:
    """1, 2 and 3 recording intervals, as far as the run is long enough to reach some step."""
    every = trajectory.steps[1] - trajectory.steps[0]
    reach = (len(trajectory.steps) - 1) // 2
    return [every * o for o in (1, 2, 3) if o <= reach] or [every]


def _slug(module: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", module).strip("_")


def analyse_trajectory(
    trajectory: Trajectory, ks: list[int], threshold: float
) -> dict[str, Rotation]:
    found = {
        m: analyse(trajectory.steps, trajectory.b_vectors(m), ks, threshold)
        for m in trajectory.modules
    }
    if len(found) > 1:
        vectors = stack({m: trajectory.b_vectors(m) for m in trajectory.modules})
        found[COMBINED] = analyse(trajectory.steps, vectors, ks, threshold)
    return found


def run_phase(
    source: str | Path,
    out_dir: str | Path,
    ks: list[int] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    sweep: SweepOptions | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    from em_organisms.analysis.plots import plot_mechanics, plot_pca, plot_sweep

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trajectory = load_trajectory(source)
    ks = ks or default_ks(trajectory)
    rotations = analyse_trajectory(trajectory, ks, threshold)
    primary = COMBINED if COMBINED in rotations else trajectory.modules[0]
    grad_steps, grad_norms = gradient_curve(trajectory.training_log)
    grad_peak = peak_step(grad_steps, grad_norms)
    plots = []
    for name, rotation in rotations.items():
        mechanics, pca = f"mechanics_{_slug(name)}.png", f"pca_{_slug(name)}.png"
        plot_mechanics(rotation, grad_steps, grad_norms, out / mechanics, title=name)
        plot_pca(rotation, out / pca, title=name)
        plots += [mechanics, pca]
    result: dict[str, Any] = {
        "em_organisms_version": __version__,
        "trajectory": describe(trajectory),
        "ks": ks,
        "threshold": threshold,
        "primary": primary,
        "rotation_step": rotations[primary].rotation_step,
        "min_local_cosine": rotations[primary].min_local_cosine,
        "candidate_step": rotations[primary].candidate_step,
        "grad_norm_peak_step": grad_peak,
        "rotations": {name: asdict(r) for name, r in rotations.items()},
        "gradient": {"steps": grad_steps, "grad_norm": grad_norms},
        "sweep": None,
        "plots": plots,
    }
    if sweep is not None:
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
    from em_organisms.eval.judges import make_judge
    from em_organisms.eval.plan import resolve_plan
    from em_organisms.generation import model_generation_config
    from em_organisms.models import resolve_model

    steps = options.steps or pick_steps(sorted(trajectory.checkpoints), options.count)
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
    )
    grid["calibration"] = {
        "passed": calibration["passed"],
        "aligned_auroc": calibration["aligned"]["auroc"],
        "pairs": calibration["pairs"],
    }
    return grid


def _rate(cell: dict[str, Any]) -> str:
    p = cell["em_all_scored"]
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
    lines += [
        "",
        f"- Maximum rotation ({result['primary']}): "
        + (
            f"**step {step}** (local cosine {result['min_local_cosine']:.2f} < "
            f"{result['threshold']} at every k in {result['ks']})"
            if step is not None
            else "none found"
            + (
                f" (lowest mean local cosine {result['min_local_cosine']:.2f} at step "
                f"{result['candidate_step']}, not below {result['threshold']} at every k in "
                f"{result['ks']})"
                if result["candidate_step"] is not None
                else f" (the run is too short for k in {result['ks']})"
            )
        ),
        f"- Gradient-norm peak: step {result['grad_norm_peak_step']}"
        if result["grad_norm_peak_step"] is not None
        else "- Gradient-norm peak: no training log",
    ]
    sweep = result["sweep"]
    if sweep:
        calibration = sweep["calibration"]
        verdict = (
            "calibrated"
            if calibration["passed"]
            else f"UNCALIBRATED (aligned AUROC {calibration['aligned_auroc']}): rates are not reliable"
        )
        lines += [
            "",
            f"## Behaviour: EM rate (all scored answers), judge {sweep['judge']}, {verdict}",
            "",
            "| step | " + " | ".join(f"x{s:g}" for s in sweep["scales"]) + " |",
            "|---|" + "---|" * len(sweep["scales"]),
        ]
        cells = {(c["step"], c["scale"]): c for c in sweep["cells"]}
        for s in sweep["steps"]:
            row = [_rate(cells[s, scale]) for scale in sweep["scales"]]
            lines.append(f"| {s} | " + " | ".join(row) + " |")
        lines.append("")
        plan = sweep.get("plan") or {}
        followed = (
            "as published"
            if plan.get("as_published")
            else "changed: " + ", ".join(plan.get("overrides") or {})
        )
        lines.append(
            f"Protocol `{plan.get('protocol')}` v{plan.get('protocol_version')} ({followed}); "
            f"{sweep['samples_per_question']} samples per question of "
            f"{', '.join(sweep['question_sets'])}; sampling {sweep['generation']}."
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
