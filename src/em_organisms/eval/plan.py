"""The fully resolved evaluation plan: a protocol, then the recipe's and the command line's changes.

Defaults live in one place, the protocol; a recipe's `evaluation:` section and the command line
may change any of its values, and every change is kept in `overrides` with who made it, so a
number states whether it was made under the protocol as published. `eval --plan` prints
`EvalPlan.to_json()` without loading a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from em_organisms import defaults
from em_organisms.eval.categories import TOPIC_THRESHOLD, resolve_topic_prompts
from em_organisms.eval.judge_prompts import JudgePrompts, resolve_judge_prompts
from em_organisms.eval.protocol import Protocol, ProtocolError, load_protocol
from em_organisms.eval.questions import QuestionSet
from em_organisms.eval.registry import resolve_question_set
from em_organisms.generation import SamplingParams, inherit_generation_config

DEFAULT_PROTOCOL = "project"
SAMPLING_FIELDS = tuple(f for f in SamplingParams.__dataclass_fields__)
# what a recipe's evaluation section or the command line may change, beside the sampling fields
PLAN_FIELDS = (
    "question_sets",
    "samples_per_question",
    "judge_prompts",
    "include_variants",
    "topic_prompts",
)
OVERRIDABLE = (*PLAN_FIELDS, *SAMPLING_FIELDS)


def _protocol_value(protocol: Protocol, key: str) -> Any:
    if key in SAMPLING_FIELDS:
        return getattr(protocol.sampling, key)
    return getattr(protocol, key)


@dataclass(frozen=True)
class EvalPlan:
    protocol: Protocol
    sets: tuple[QuestionSet, ...]
    judge_prompts: JudgePrompts
    params: SamplingParams
    samples_per_question: int
    engine: str
    judge: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    topics: JudgePrompts | None = None  # --categories: the topic prompts, else None

    @property
    def question_sets(self) -> list[str]:
        return [s.name for s in self.sets]

    @property
    def as_published(self) -> bool:
        """True when nothing that changes a number differs from the protocol."""
        return not self.overrides

    def protocol_record(self) -> dict[str, Any]:
        """What every sampled row carries: the protocol and whether it was followed."""
        return {
            "name": self.protocol.name,
            "version": self.protocol.version,
            "sha256": self.protocol.sha256,
            "as_published": self.as_published,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol.name,
            "protocol_version": self.protocol.version,
            "protocol_sha256": self.protocol.sha256,
            "protocol_reference": self.protocol.reference,
            "as_published": self.as_published,
            "overrides": self.overrides,
            "questions": [
                {"name": s.name, "sha256": s.sha256, "n_questions": len(s)} for s in self.sets
            ],
            "include_variants": self.protocol_value_or_override("include_variants"),
            "judge_prompts": self.judge_prompts.describe(),
            "sampling": {"n": self.samples_per_question, **self.params.to_dict()},
            "engine": self.engine,
            "judge": self.judge,
            "em": self.protocol.em.model_dump(),
            "categories": None
            if self.topics is None
            else {"topics": self.topics.describe(), "threshold": TOPIC_THRESHOLD},
            **({"note": self.note} if self.note else {}),
        }

    def protocol_value_or_override(self, key: str) -> Any:
        if key in self.overrides:
            return self.overrides[key]["value"]
        return _protocol_value(self.protocol, key)


def resolve_plan(
    protocol: str | None = None,
    *,
    recipe: Mapping[str, Any] | None = None,
    command_line: Mapping[str, Any] | None = None,
    engine: str = defaults.ENGINE,
    judge: str | None = None,
    model_generation_config: Callable[[], Any] | None = None,
    note: str = "",
    cache_dir: str | None = None,
    categories: bool = False,
) -> EvalPlan:
    """Protocol (by name or path; default the recipe's, else `project`), then RECIPE's changes,
    then COMMAND_LINE's (None values are "not given"). MODEL_GENERATION_CONFIG returns the base
    model's generation config, read only when `generation_config: model` is asked for."""
    recipe = {k: v for k, v in (recipe or {}).items() if v is not None}
    command_line = {k: v for k, v in (command_line or {}).items() if v is not None}
    chosen = load_protocol(protocol or recipe.pop("protocol", None) or DEFAULT_PROTOCOL)
    recipe.pop("protocol", None)
    for source in (recipe, command_line):
        if unknown := set(source) - set(OVERRIDABLE):
            raise ProtocolError(f"not a plan setting: {', '.join(sorted(unknown))}")

    overrides: dict[str, dict[str, Any]] = {}
    values: dict[str, Any] = {}
    for key in OVERRIDABLE:
        value = _protocol_value(chosen, key)
        for who, source in (("recipe", recipe), ("command line", command_line)):
            if key in source:
                value = source[key]
                given = _protocol_value(chosen, key)
                if _normal(value) != _normal(given):
                    overrides[key] = {"protocol": given, "value": value, "by": who}
                else:
                    overrides.pop(key, None)
        values[key] = value

    sets = tuple(
        resolve_question_set(name, values["include_variants"], cache_dir)
        for name in values["question_sets"]
    )
    prompts = resolve_judge_prompts(values["judge_prompts"], sets)
    params = SamplingParams(**{k: values[k] for k in SAMPLING_FIELDS})
    if params.generation_config == "model":
        if model_generation_config is None:
            raise ProtocolError("generation_config: model needs the model's generation config")
        inherited = inherit_generation_config(
            replace(params, generation_config="explicit"), model_generation_config(), "model"
        )
        for key in ("top_k", "min_p", "repetition_penalty"):
            if getattr(inherited, key) != getattr(params, key):
                overrides[key] = {
                    "protocol": _protocol_value(chosen, key),
                    "value": getattr(inherited, key),
                    "by": "the model's generation config",
                }
        params = inherited
    return EvalPlan(
        protocol=chosen,
        sets=sets,
        judge_prompts=prompts,
        params=params,
        samples_per_question=int(values["samples_per_question"]),
        engine=engine,
        judge=judge or chosen.judge,
        overrides=overrides,
        note=note,
        topics=resolve_topic_prompts(values["topic_prompts"]) if categories else None,
    )


def _normal(value: Any) -> Any:
    """Compare 1 and 1.0, and lists with tuples, as equal."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)
