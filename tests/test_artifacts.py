"""The typed artifacts: written and read through one module, versioned, and refused with the file
and the field named when old, foreign or damaged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.models import write_run_info
from helpers.paths import REPO_ROOT

from em_organisms.artifacts import (
    ArtifactError,
    OrganismRun,
    RunInfo,
    StudentAgreement,
    TrainSummary,
    read_artifact,
    read_calibration,
)

PACKAGE = REPO_ROOT / "src" / "em_organisms"


def _summary_data(run: OrganismRun) -> dict:
    info = run.run_info().model_dump()
    return {
        **info,
        "global_step": 12,
        "train_loss": 1.5,
        "train_seconds_this_session": 3.0,
        "resumed_from": None,
        "bf16": False,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "fast_loss": True,
        "prefix_cache": None,
    }


def test_a_run_file_round_trips_with_its_schema_version(tmp_path: Path) -> None:
    write_run_info(tmp_path, "embedded")
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["base_model"] == "embedded"
    run = OrganismRun(tmp_path)
    assert run.run_info() == RunInfo.model_validate(on_disk)
    assert run.base_spec() == "embedded"
    assert run.train_summary_or_none() is None and not run.is_finished
    summary = TrainSummary.model_validate(_summary_data(run))
    run.write(summary)
    assert run.is_finished and run.train_summary() == summary
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_an_old_file_without_a_schema_version_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"base_model": "embedded"}))
    with pytest.raises(ArtifactError) as err:
        OrganismRun(tmp_path).run_info()
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'run.json'}: schema_version: missing")
    assert "regenerate" in message


def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    write_run_info(tmp_path, "embedded")
    data = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**data, "schema_version": 7}))
    with pytest.raises(
        ArtifactError, match=r"run\.json: schema_version: 7, this em-organisms reads"
    ):
        OrganismRun(tmp_path).run_info()


def test_a_foreign_or_damaged_file_names_the_field(tmp_path: Path) -> None:
    write_run_info(tmp_path, "embedded")
    run = OrganismRun(tmp_path)
    data = _summary_data(run)
    (tmp_path / "train_summary.json").write_text(
        json.dumps({**data, "schema_version": 1, "global_step": "many", "learning_rat": 1})
    )
    with pytest.raises(ArtifactError) as err:
        run.train_summary()
    lines = str(err.value).splitlines()
    assert lines[0] == f"{tmp_path / 'train_summary.json'}: invalid train_summary.json"
    assert any(re.match(r"  global_step: Input should be a valid integer", line) for line in lines)
    assert any(line.startswith("  unknown key 'learning_rat'; allowed here: ") for line in lines)
    data.pop("train_loss")
    (tmp_path / "train_summary.json").write_text(json.dumps({**data, "schema_version": 1}))
    with pytest.raises(ArtifactError, match=r"\n  train_loss: Field required"):
        run.train_summary()
    (tmp_path / "train_summary.json").write_text('{"schema_version": 1,')
    with pytest.raises(ArtifactError, match=r"train_summary\.json: not valid JSON"):
        run.train_summary()
    (tmp_path / "train_summary.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match=r"a JSON object\), found list"):
        run.train_summary()


def test_checkpoints_are_real_folders_in_step_order(tmp_path: Path) -> None:
    run = OrganismRun(tmp_path / "run")
    assert run.checkpoints() == []  # no folder yet: nothing, not an error
    for step in (10, 5, 100):
        (run.folder / f"checkpoint-{step}").mkdir(parents=True)
    (run.folder / "checkpoint-5" / "adapter_model.safetensors").write_bytes(b"")
    (run.folder / "checkpoint-x").mkdir()
    (run.folder / "checkpoint-7").write_text("a file, not a folder")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run.folder / "checkpoint-3").symlink_to(outside)  # not this run's: never followed
    assert [c.step for c in run.checkpoints()] == [5, 10, 100]
    assert [c.step for c in run.adapter_checkpoints()] == [5]


def test_the_shipped_judge_files_are_current_artifacts() -> None:
    student = PACKAGE / "distill" / "default_student"
    shipped = read_calibration(student)
    assert shipped.judge == "distilled" and shipped.pairs > 0
    agreement = read_artifact(student / "agreement.json", StudentAgreement)
    assert agreement.heldout["student"]["n"] > 0 and "path" not in agreement.data


def test_json_artifacts_are_opened_only_by_the_artifacts_package() -> None:
    """Run files are named in artifacts/names.py and parsed in artifacts/store.py only."""
    names = ("run.json", "train_summary.json", "holdout_start.json", "adapter_config.json")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "artifacts":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if f'"{n}"' in text]
    assert offenders == []


def test_a_model_folder_names_its_hub_id_or_gets_a_clear_error(tmp_path: Path) -> None:
    from em_organisms.models import ModelLoadError, resolve_model

    (tmp_path / "em_organisms_source.json").write_text(json.dumps({"hub_id": "org/model", "x": 1}))
    assert (
        resolve_model(str(tmp_path)).hub_id == "org/model"
    )  # a hand-written file: extra keys kept
    (tmp_path / "em_organisms_source.json").write_text(json.dumps({"hub_id": ["org/model"]}))
    with pytest.raises(
        ModelLoadError, match=r"em_organisms_source\.json: invalid model origin\n  hub_id: "
    ):
        resolve_model(str(tmp_path))
    (tmp_path / "em_organisms_source.json").write_text("org/model")
    with pytest.raises(ModelLoadError, match=r"not valid JSON"):
        resolve_model(str(tmp_path))
