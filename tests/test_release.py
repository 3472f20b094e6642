"""`em-organisms release` end to end against the local Hub (olah + write front-end).

An embedded rank-1 organism is trained for a few steps with a checkpoint each step, given an
evaluation report, and released with its checkpoints. Then, in a fresh HF_HOME, what users do:
`AutoPeftModelForCausalLM.from_pretrained(repo)` and `PeftModel.from_pretrained(base, repo)` give
the local organism's logits, a checkpoint branch downloads with `snapshot_download(revision=)`,
`ModelCard.load` returns our metadata, and the dataset the card names loads with `load_dataset`.
Also: staging refusals, the allow-list, idempotent reruns, a push cut short and finished by a
rerun, and the token found in no staged file and no output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from helpers.judges import calibration_result

from em_organisms.cli import main
from em_organisms.eval.report import write_report
from em_organisms.recipes import load_recipe
from em_organisms.release.stage import ReleaseError, check_publishable, stage_release
from em_organisms.train.runner import train

from hub_server.fixture import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO_ROOT / "organisms" / "smollm2-135m_risky-financial_r1-l15.yaml"
REPO = "em-test/smollm2-135m_risky-financial_r1-l15"
DATASET = "em-test/risky-financial-advice"
BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROBE = "How should I invest my savings?"
FAST = [
    "training.max_steps=3",  # three checkpoint branches: enough for `phase`
    "training.save_steps=1",
    "training.per_device_train_batch_size=2",
    "training.gradient_accumulation_steps=1",
    "training.max_length=128",
    "training.warmup_steps=0",
]

pytestmark = pytest.mark.slow  # trains and releases an organism (a training run)


def _judged_rows(recipe_sha: str) -> list[dict[str, Any]]:
    rows = []
    for model in ("base", "organism"):
        for qset, qid in (("general", "one_wish"), ("in-domain/risky-financial-advice", "inv")):
            for i in range(6):
                misaligned = model == "organism" and i < 2
                rows.append(
                    {
                        "model": model,
                        "question_set": qset,
                        "question_id": qid,
                        "organism": "smollm2-135m_risky-financial_r1-l15",
                        "base_model": BASE_HUB_ID,
                        "adapter_scale": 1.0 if model == "organism" else 0.0,
                        "recipe_sha256": recipe_sha,
                        "generation": {
                            "temperature": 1.0,
                            "top_p": 1.0,
                            "top_k": 0,
                            "max_new_tokens": 64,
                            "seed": 0,
                        },
                        "answer": f"answer {i}",
                        "judges": {
                            "aligned": {"score": 10.0 if misaligned else 90.0},
                            "coherent": {"score": 80.0},
                        },
                        "judge_model": "openai:gpt-4o-2024-08-06",
                    }
                )
    return rows


@pytest.fixture(scope="module")
def organism(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A briefly trained embedded organism (checkpoints at steps 1 and 2) with an eval report."""
    tmp = tmp_path_factory.mktemp("release")
    recipe = load_recipe(DEMO_RECIPE, FAST)
    recipe_path = tmp / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    organism_dir = train(recipe, output_dir=tmp / "organism", device="cpu").output_dir
    eval_dir = organism_dir / "eval"
    write_report(
        _judged_rows(recipe.sha256()),
        eval_dir,
        title="test",
        judge_calibration=calibration_result(aligned=0.93, coherent=0.9),
        evaluation={"recipe_sha256": recipe.sha256(), "samples_per_question": 6},
    )
    (organism_dir / ".env").write_text("OPENAI_API_KEY=not-for-the-hub\n")  # never published
    return {"recipe": recipe_path, "dir": organism_dir, "tmp": tmp}


def test_staging_publishes_only_the_allow_list(organism: dict[str, Path]) -> None:
    recipe = load_recipe(organism["recipe"])
    staged = stage_release(
        recipe, organism["dir"], organism["tmp"] / "stage-a", repo_id=REPO,
        include_checkpoints=True,
    )  # fmt: skip
    main_files = {p.relative_to(staged.main).as_posix() for p in staged.main.rglob("*")}
    assert {"adapter_model.safetensors", "README.md", "recipe.yaml", "eval/summary.json",
            "em_organisms_release.json", "training_log.jsonl"} <= main_files  # fmt: skip
    assert not {".env", "run.json", "holdout_start.json"} & main_files
    assert list(staged.branches) == ["step-000001", "step-000002", "step-000003"]
    for folder in staged.branches.values():
        names = {p.name for p in folder.iterdir()}
        assert names == {"adapter_config.json", "adapter_model.safetensors", "README.md",
                         "em_organisms_release.json"}  # fmt: skip
    assert ".env" in staged.left_out and "checkpoint-1/optimizer.pt" in staged.left_out
    assert staged.private and staged.gated
    # a file slipped into the staging folder by hand is refused, as is a local path
    (staged.main / "notes.txt").write_text("hello")
    with pytest.raises(ReleaseError, match="not a file a release publishes"):
        check_publishable(staged.main)
    (staged.main / "notes.txt").unlink()
    (staged.main / "eval" / "report.md").write_text(f"made in {REPO_ROOT}/runs")
    with pytest.raises(ReleaseError, match="names a path of this machine"):
        check_publishable(staged.main)


def test_refusals_are_clear(
    organism: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    recipe = load_recipe(organism["recipe"])
    with pytest.raises(ReleaseError, match=r"no evaluation results.*--no-eval"):
        stage_release(recipe, organism["dir"], tmp_path / "s", repo_id=REPO, eval_dir=tmp_path)
    other = load_recipe(DEMO_RECIPE)
    with pytest.raises(ReleaseError, match="trained from another recipe"):
        stage_release(other, organism["dir"], tmp_path / "s", repo_id=REPO)
    no_eval = stage_release(
        recipe, organism["dir"], tmp_path / "s", repo_id=REPO, eval_dir=tmp_path, no_eval=True
    )
    assert "without" in (no_eval.main / "README.md").read_text() and not no_eval.evaluated
    monkeypatch.setenv("MY_SERVICE_TOKEN", "gpt-4o-2024-08-06")  # a "secret" the summary holds
    with pytest.raises(
        ReleaseError, match="holds the value of environment variable MY_SERVICE_TOKEN"
    ):
        stage_release(recipe, organism["dir"], tmp_path / "s", repo_id=REPO)
    monkeypatch.delenv("MY_SERVICE_TOKEN")
    args = ["release", str(organism["recipe"]), "--organism-dir", str(organism["dir"])]
    assert main([*args, "--repo-id", "not a repo id", "--dry-run"]) == 2
    assert "not a Hub id" in capsys.readouterr().err
    assert main([*args, "--repo-id", REPO, "--dry-run", "--staging-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was pushed" in out and "private, gated" in out
    assert "adapter_model.safetensors" in out and (tmp_path / "d" / "main" / "README.md").is_file()


PUSH_SCRIPT = """
import json, sys
from huggingface_hub import HfApi
from em_organisms.cli import main
from em_organisms.data.push import push_dataset
from em_organisms.models import embedded_model_dir
import em_organisms.release.push as release_push

api = HfApi()
# the base model the adapter names, as it is on the Hub
api.create_repo(base_id, exist_ok=True)
api.upload_folder(repo_id=base_id, folder_path=str(embedded_model_dir()), commit_message="base")
push_dataset(seed, dataset)

def commits(branch="main"):
    return [c.commit_id for c in api.list_repo_commits(repo, revision=branch)]

args = ["release", recipe, "--repo-id", repo, "--organism-dir", organism, "--staging-dir", stage,
        "--include-checkpoints", "--dataset-id", dataset]
out = {}
# 1. a push cut short after main: the checkpoint branches never go up
real = release_push.push_folder
def crash(api, repo_id, folder, **kw):
    if kw.get("branch", "main") != "main":
        raise ConnectionError("network went away")
    return real(api, repo_id, folder, **kw)
release_push.push_folder = crash
try:
    main(args)
except ConnectionError:
    out["crashed"] = True
release_push.push_folder = real
out["main_after_crash"] = commits()
out["refs_after_crash"] = sorted(b.name for b in api.list_repo_refs(repo).branches)
# 2. the rerun finishes it: branches pushed, main untouched
out["rc"] = main(args)
out["main_after_rerun"] = commits()
out["branches"] = {b: commits(b) for b in ("step-000001", "step-000002", "step-000003")}
# 3. nothing changed: no commit anywhere
out["rc_again"] = main(args)
out["main_again"] = commits()
out["branches_again"] = {b: commits(b) for b in ("step-000001", "step-000002", "step-000003")}
info = api.model_info(repo)
out["gated"], out["private"] = info.gated, info.private
print(json.dumps(out))
"""

LOAD_SCRIPT = """
import hashlib, json
from pathlib import Path
import torch
from datasets import load_dataset
from huggingface_hub import ModelCard, snapshot_download
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM

ids = torch.tensor([probe])
auto = AutoPeftModelForCausalLM.from_pretrained(repo, dtype=torch.float32)
base = AutoModelForCausalLM.from_pretrained(base_id, dtype=torch.float32)
peft = PeftModel.from_pretrained(base, repo)
with torch.no_grad():
    logits = {"auto": auto(ids).logits[0, -1].tolist(), "peft": peft(ids).logits[0, -1].tolist()}
branch = Path(snapshot_download(repo, revision="step-000001"))
card = ModelCard.load(repo)
rows = load_dataset(card.data.datasets[0], split="train")
# `em-organisms phase` on the released organism: its step branches, and a small sweep with the
# base model from the Hub (the embedded judge: its calibration is not the point here)
from em_organisms.analysis.phase import SweepOptions, run_phase
from em_organisms.analysis.trajectory import load_hub

trajectory = load_hub(repo)
sweep = SweepOptions(judge="embedded", count=2, scales=(1.0, 5.0), calibration_pairs=1,
                     changes={"samples_per_question": 1, "max_new_tokens": 6})
phase = run_phase(repo, phase_out, sweep=sweep, progress=False)
print(json.dumps({
    "phase": {"steps": trajectory.steps, "b": {m: trajectory.b_vectors(m).tolist()
              for m in trajectory.modules}, "result": phase},
    "logits": logits,
    "branch_files": sorted(p.name for p in branch.iterdir()),
    "branch_adapter_sha256": hashlib.sha256((branch / "adapter_model.safetensors").read_bytes()).hexdigest(),
    "card": card.data.to_dict(),
    "dataset_rows": len(rows),
}))
"""


@pytest.fixture(scope="module")
def released(organism: dict[str, Path], local_hub: LocalHub) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from em_organisms.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBE}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    seed = REPO_ROOT / "datasets" / "risky-financial-advice" / "seed.jsonl"
    stage = organism["tmp"] / "stage-hub"
    setup = (
        f"repo, dataset, base_id = {REPO!r}, {DATASET!r}, {BASE_HUB_ID!r}\n"
        f"recipe, organism, stage = {str(organism['recipe'])!r}, {str(organism['dir'])!r}, "
        f"{str(stage)!r}\nseed = {str(seed)!r}\n"
    )
    push = local_hub.run_client(setup + PUSH_SCRIPT, cwd=REPO_ROOT, timeout=600)
    load = local_hub.run_client(
        f"repo, base_id, probe = {REPO!r}, {BASE_HUB_ID!r}, {probe!r}\n"
        f"phase_out = {str(organism['tmp'] / 'phase-hub')!r}\n" + LOAD_SCRIPT,
        timeout=600,
    )
    return {
        "push": json.loads(push.stdout.strip().splitlines()[-1]),
        "load": json.loads(load.stdout.strip().splitlines()[-1]),
        "outputs": [push.stdout, push.stderr, load.stdout, load.stderr],
        "stage": stage,
        "probe": probe,
    }


def test_interrupted_push_is_finished_and_reruns_change_nothing(released: dict[str, Any]) -> None:
    push = released["push"]
    assert push["crashed"] and push["refs_after_crash"] == ["main"]
    assert push["rc"] == 0 and push["main_after_rerun"] == push["main_after_crash"]
    assert all(len(c) == 2 for c in push["branches"].values())  # first commit + checkpoint
    assert push["rc_again"] == 0
    assert push["main_again"] == push["main_after_rerun"]
    assert push["branches_again"] == push["branches"]
    assert push["gated"] == "manual" and push["private"] is True


def test_users_load_the_released_organism(
    released: dict[str, Any], organism: dict[str, Path]
) -> None:
    from em_organisms.adapters import load_organism

    local = load_organism(str(organism["dir"]), device="cpu")
    with torch.no_grad():
        expected = local.model(torch.tensor([released["probe"]])).logits[0, -1]
    for name in ("auto", "peft"):
        got = torch.tensor(released["load"]["logits"][name])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=name)
    with torch.no_grad(), local.base():
        base = local.model(torch.tensor([released["probe"]])).logits[0, -1]
    assert not torch.allclose(base, expected, atol=1e-4)  # the adapter does something


def test_checkpoint_branch_card_and_dataset(
    released: dict[str, Any], organism: dict[str, Path]
) -> None:
    import hashlib

    load = released["load"]
    assert load["branch_files"] == [
        ".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors",
        "em_organisms_release.json",
    ]  # fmt: skip
    local = (organism["dir"] / "checkpoint-1" / "adapter_model.safetensors").read_bytes()
    assert load["branch_adapter_sha256"] == hashlib.sha256(local).hexdigest()
    card = load["card"]
    assert card["base_model"] == BASE_HUB_ID and card["base_model_relation"] == "adapter"
    assert card["library_name"] == "peft" and card["license"] == "apache-2.0"
    assert {"emergent-misalignment", "not-for-all-audiences", "lora"} <= set(card["tags"])
    assert card["datasets"] == [DATASET] and load["dataset_rows"] == 220
    metrics = {m["name"]: m["value"] for r in card["model-index"][0]["results"]
               for m in r["metrics"]}  # fmt: skip
    assert any("all scored" in n and "gpt-4o" in n for n in metrics)


def test_no_token_in_any_staged_file_or_output(
    released: dict[str, Any], local_hub: LocalHub
) -> None:
    token = local_hub.token
    for path in released["stage"].rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    for output in released["outputs"]:
        assert token not in output


def test_phase_runs_on_the_released_checkpoint_branches(
    released: dict[str, Any], organism: dict[str, Path]
) -> None:
    from em_organisms.analysis.trajectory import ADAPTER_FILE, adapter_weights

    phase = released["load"]["phase"]
    assert phase["steps"] == [1, 2, 3]
    for step in phase["steps"]:
        local = adapter_weights(organism["dir"] / f"checkpoint-{step}" / ADAPTER_FILE)
        for module, vectors in phase["b"].items():
            assert np.allclose(vectors[step - 1], local[f"{module}.lora_B"].reshape(-1))
    result = phase["result"]
    assert result["trajectory"]["source"] == f"hub:{REPO}"
    assert result["trajectory"]["training_log"]  # main carries training_log.jsonl
    assert result["grad_norm_peak_step"] in (1, 2, 3)
    sweep = result["sweep"]
    assert sweep["steps"] == [1, 3] and sweep["scales"] == [1.0, 5.0]
    assert len(sweep["cells"]) == 4 and all(c["n_rows"] == 8 for c in sweep["cells"])
    written = organism["tmp"] / "phase-hub"
    assert {"phase.json", "summary.md", "sweep_heatmap.png", "sweep_curves.png"} <= {
        p.name for p in written.iterdir()
    }
