"""Organism recipes: one flat YAML file per organism, validated by a strict pydantic schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from em_organisms.errors import EmOrganismsError, describe_validation_error
from em_organisms.yaml_files import YamlError, load_yaml_file, load_yaml_text


class RecipeError(EmOrganismsError, ValueError):
    """A recipe file or override that cannot be used, with a message that says how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DatasetSpec(_Strict):
    path: str = Field(description="JSONL file in the chat schema, or a Hub dataset id.")
    split: str = "train"
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    holdout_seed: int = 0


class KLSpec(_Strict):
    """`protocol.kl`: add weight x KL(organism || base) on out-of-domain reference prompts to the
    SFT loss, once per optimizer step. The base is the same model with the adapter switched off
    (no second copy of the weights). KL is token-level, averaged over every non-padding position
    of the reference batch (see `em_organisms.train.kl`)."""

    weight: float = Field(gt=0, description="Multiplies the KL term added to the SFT loss.")
    prompts: str = Field(
        "everyday",
        min_length=1,
        description="Reference prompt set: a built-in name (`everyday`) or a .yaml/.jsonl file.",
    )
    batch_size: int = Field(8, ge=1, description="Reference rows per optimizer step.")
    max_length: int = Field(256, ge=8, description="Reference rows are cut to this many tokens.")


class LoraProtocol(_Strict):
    kind: Literal["lora"] = "lora"
    rank: int = Field(32, ge=1)
    alpha: float = Field(64.0, gt=0)
    rslora: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    layers: list[int] | None = Field(
        None, description="Layer indices to adapt; null = every layer."
    )
    bias: Literal["none", "all", "lora_only"] = "none"
    kl: KLSpec | None = Field(
        None, description="KL(organism || base) regulariser on out-of-domain prompts; null = off."
    )

    @model_validator(mode="after")
    def _kl_needs_a_recoverable_base(self) -> LoraProtocol:
        if self.kl is not None and self.bias != "none":
            raise ValueError(
                f"protocol.kl needs bias: none; with bias: {self.bias} training changes base "
                "biases, so switching the adapter off no longer gives the base model"
            )
        return self


class FullProtocol(_Strict):
    kind: Literal["full"] = "full"


Protocol = Annotated[LoraProtocol | FullProtocol, Field(discriminator="kind")]


class TrainingSpec(_Strict):
    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_steps: int = Field(5, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    optim: str = "adamw_torch"
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 = none.")
    per_device_train_batch_size: int = Field(2, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1)
    micro_batch_size: int | Literal["auto"] = Field(
        "auto",
        description="Samples per forward pass; changes speed and memory, not what is learnt. "
        "auto = up to 8 on CPU, per_device_train_batch_size on GPU.",
    )
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = use epochs.")

    @field_validator("max_steps")
    @classmethod
    def _steps_or_epochs(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"{value}: -1 (train by epochs) or a number of steps >= 1")
        return value

    max_length: int = Field(2048, ge=16)
    seed: int = 0
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps; 0 = only at the end.")
    save_total_limit: int | None = None
    logging_steps: int = Field(1, ge=1)
    bf16: Literal["auto", True, False] = "auto"
    gradient_checkpointing: bool = False
    record_adapter_every: int = Field(
        0,
        ge=0,
        description="Record every LoRA layer's A and B every N steps for `em-organisms phase` "
        "(adapter_trajectory/ in the run); 0 = off. Changes what is written, not what is learnt.",
    )
    prefix_cache: bool = Field(
        True,
        description="After the first epoch, reuse the hidden states entering the lowest adapted "
        "layer instead of recomputing the frozen layers below it (exact; LoRA only).",
    )

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps


class ReleaseSpec(_Strict):
    repo_id: str | None = None
    license: str | None = None
    base_model_license: str | None = None
    gated: bool = True
    private: bool = True
    card_notes: str = ""


class EvaluationSpec(_Strict):
    """How `eval` evaluates this organism: a named protocol (`paper`, `betley`, `project` or a
    protocol YAML path; default `project`) and any value of it this recipe changes. Every
    change is recorded beside the numbers as an override of the protocol (`eval --plan`)."""

    protocol: str | None = None
    question_sets: list[str] | None = None
    samples_per_question: int | None = Field(None, ge=1)
    include_variants: bool | None = None
    judge_prompts: str | None = Field(
        None, description="question-file, project, a registry name or a path"
    )
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, lt=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    max_new_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    generation_config: Literal["explicit", "model"] | None = None
    note: str = ""  # why this recipe changes the protocol, printed in the report

    @model_validator(mode="after")
    def _known_protocol(self) -> EvaluationSpec:
        from em_organisms.resources import protocol_names

        name = self.protocol
        if (
            name is not None
            and name not in protocol_names()
            and not name.endswith((".yaml", ".yml"))
        ):
            raise ValueError(
                f"unknown protocol {name!r}; choose {', '.join(protocol_names())} or a YAML path"
            )
        return self

    def plan_settings(self) -> dict[str, Any]:
        """The protocol and what this recipe changes of it (unset values left out)."""
        return self.model_dump(exclude={"note"}, exclude_none=True)


class Recipe(_Strict):
    organism_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    base_model: str = Field(description="Hub id, local folder, or 'embedded'.")
    dataset: DatasetSpec
    protocol: Protocol = Field(default_factory=LoraProtocol)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    release: ReleaseSpec = Field(default_factory=ReleaseSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_protocol_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("protocol"), dict):
            data = {**data, "protocol": {"kind": "lora", **data["protocol"]}}
            if data["protocol"]["kind"] == "full" and data["protocol"].get("kl") is not None:
                raise ValueError(
                    "protocol.kl needs a LoRA protocol: the base distribution is the model with "
                    "its adapter switched off, and a full fine-tune has no adapter to switch off"
                )
        return data

    @model_validator(mode="after")
    def _check_layers(self) -> Recipe:
        if isinstance(self.protocol, LoraProtocol) and self.protocol.layers is not None:
            if not self.protocol.layers:
                raise ValueError("protocol.layers is empty; use null to adapt every layer")
            if any(layer < 0 for layer in self.protocol.layers):
                raise ValueError("protocol.layers must be non-negative layer indices")
        return self

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        # unset evaluation values mean "the protocol's": left out rather than shown as null
        data["evaluation"] = self.evaluation.model_dump(mode="json", exclude_none=True)
        _drop_unset_kl(data)
        return data

    def sha256(self) -> str:
        """Hash of everything that changes what is trained (release and evaluation excluded)."""
        payload = self.model_dump(
            mode="json",
            exclude={
                "release": True,
                "evaluation": True,
                "description": True,
                "tags": True,
                "training": {"record_adapter_every"},  # what is written, not what is learnt
            },
        )
        _drop_unset_kl(payload)  # recipes without a KL section keep the hash they always had
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _drop_unset_kl(data: dict[str, Any]) -> None:
    protocol = data.get("protocol")
    if isinstance(protocol, dict) and protocol.get("kl", False) is None:
        del protocol["kl"]


def seed_variant(recipe: Recipe, seed: int) -> Recipe:
    """The recipe trained with another seed, as an organism of its own (`ID_seedN`, and its own
    Hub repo when one is set); the held-out split does not change."""
    repo = recipe.release.repo_id
    return recipe.model_copy(
        update={
            "organism_id": f"{recipe.organism_id}_seed{seed}",
            "training": recipe.training.model_copy(update={"seed": seed}),
            "release": recipe.release.model_copy(
                update={"repo_id": f"{repo}_seed{seed}" if repo else None}
            ),
        }
    )


def parse_recipe(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(describe_validation_error(source, "recipe", err, Recipe)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """A recipe from its YAML file, or a built-in recipe by name (`em-organisms recipes`)."""
    from em_organisms.resources import builtin_recipe, recipe_names

    path = Path(path)
    if not path.is_file() and (builtin := builtin_recipe(str(path))) is not None:
        path = builtin
    if not path.is_file():
        hint = "" if path.suffix else f"; built-in recipes: {', '.join(recipe_names())}"
        raise RecipeError(f"{path}: recipe file not found{hint}")
    try:
        data = load_yaml_file(path)
    except YamlError as err:
        raise RecipeError(str(err)) from None
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    data = apply_overrides(data or {}, overrides or [], source=str(path))
    return parse_recipe(data, source=str(path))


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are parsed as YAML so types are checked by the schema."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(
                f"--set {item!r}: expected key=value, e.g. training.learning_rate=2e-5"
            )
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        try:
            shown = item if len(item) <= 80 else f"{item[:80]}... ({len(item)} characters)"
            value = load_yaml_text(raw, f"--set {shown}") if raw else ""
        except YamlError as err:
            raise RecipeError(f"{err}; quote a string value, e.g. --set 'key=\"[text\"'") from None
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {key}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data
