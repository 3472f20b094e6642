"""Judge recipes: one strict YAML file fixes a student's data (by sha256), split, seed and head.

Unknown keys are refused with the keys allowed there, as for organism recipes; `--set key=value`
overrides go through the same schema. The recipe hash (of everything that changes the student)
is stored in the student's config and summary.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from em_organisms.errors import describe_validation_error
from em_organisms.recipes import RecipeError, apply_overrides
from em_organisms.yaml_files import YamlError, load_yaml_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TeacherSpec(_Strict):
    model: str  # the judge whose scores are learnt, e.g. gpt-4o-2024-08-06
    prompts: str  # which judge prompts it used (a registry name or a description)
    prompts_sha256: dict[str, str] = Field(default_factory=dict)  # metric -> sha256 of the template


class DataSpec(_Strict):
    path: str  # relative to the recipe's folder, or absolute; `--data` overrides
    sha256: str | None = None  # checked before anything else; null: not checked
    license: str = ""  # licence of the scored answers (travels to the card)
    license_notice: str = (
        ""  # file (relative to the recipe) whose text must travel with the student
    )
    provenance: str = ""  # one line: where the answers and scores come from
    teacher: TeacherSpec


class SplitSpec(_Strict):
    seed: int = 0
    experiment_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    question_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    calibration_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    heldout_experiments: list[str] | None = None  # overrides the seeded draw
    heldout_questions: list[str] | None = None
    condition_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # the easier, condition-grouped split


class FeatureSpec(_Strict):
    layers: list[int] = Field(default_factory=lambda: [2, 4, 6], min_length=1)
    # mean over every token of the pair; mean or max over the answer's tokens only
    pools: list[Literal["pair", "answer", "answer_max"]] = Field(
        default_factory=lambda: ["pair"], min_length=1
    )
    max_length: int = Field(256, ge=16, le=512)
    encoder_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    text_stats: bool = True


class HeadSpec(_Strict):
    hidden_size: int = Field(256, ge=8, le=4096)
    ensemble: int = Field(3, ge=1, le=16)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, lt=1.0)
    steered_weight: float = Field(0.5, ge=0.0, le=1.0)  # activation-steered answers count less
    balance_questions: bool = True  # each question family weighs as sqrt(its rows), not its rows
    score_source: Literal["regression", "threshold", "mean"] = "regression"


class JudgeRecipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
    description: str = ""
    seed: int = 0
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    head: HeadSpec = Field(default_factory=HeadSpec)
    release: dict[str, str] = Field(default_factory=dict)  # repo_id, license of the student

    def sha256(self) -> str:
        """Hash of what changes the student (not the description or release settings)."""
        payload = self.model_dump(exclude={"description", "release"})
        payload["data"].pop("path")  # the file is identified by its sha256, not where it lies
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_judge_recipe(path: str | Path, overrides: list[str] | None = None) -> JudgeRecipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: judge recipe not found")
    try:
        data = load_yaml_file(path)
    except YamlError as err:
        raise RecipeError(str(err)) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a judge recipe must be a YAML mapping")
    data = apply_overrides(data, overrides or [], source=str(path))
    try:
        return JudgeRecipe.model_validate(data)
    except ValidationError as err:
        message = describe_validation_error(str(path), "judge recipe", err, JudgeRecipe)
        raise RecipeError(message) from None


def resolve_data_path(recipe: JudgeRecipe, recipe_path: Path) -> Path:
    path = Path(recipe.data.path).expanduser()
    return path if path.is_absolute() else (recipe_path.parent / path)
