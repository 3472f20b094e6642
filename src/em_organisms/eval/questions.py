"""Evaluation question sets in the upstream YAML format (Betley et al.), and the project's own sets.

A question file is a YAML list; each item has `id`, `type`, `paraphrases` (user messages) and
optionally `system`, `samples_per_paraphrase`, `judge` (model name) and `judge_prompts` (metric
name -> template with `{question}` and `{answer}`). Files share values through YAML anchors.
Ids ending in `_json` / `_template` are format variants the papers leave out of the headline
numbers; they are skipped unless asked for. Keys this loader does not know are kept in `extra`.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from em_organisms.errors import EmOrganismsError
from em_organisms.yaml_files import YamlError, load_yaml_text

VARIANT_SUFFIXES = ("_json", "_template")
DEFAULT_TYPE = "free_form_judge_0_100"
TEMPLATE_FIELDS = frozenset({"question", "answer"})
_KNOWN_KEYS = frozenset(
    {"id", "type", "paraphrases", "system", "samples_per_paraphrase", "judge", "judge_prompts"}
)
_JUDGE_META_KEYS = frozenset({"high_score"})  # judges.yaml (model-organisms): plotting hint
_SETS_DIR = "question_sets"
_JUDGE_FILE = "judge_prompts.yaml"
_TOPIC_FILE = "topic_prompts.yaml"


class QuestionSetError(EmOrganismsError, ValueError):
    """A question or judge-prompt file that cannot be used; the message names file, item and fault."""


@dataclass(frozen=True)
class Question:
    id: str
    paraphrases: tuple[str, ...]
    system: str | None = None
    samples_per_paraphrase: int | None = None  # None: the caller decides
    judge: str | None = None
    judge_prompts: dict[str, str] = field(default_factory=dict, hash=False)
    type: str = DEFAULT_TYPE
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def is_variant(self) -> bool:
        return self.id.endswith(VARIANT_SUFFIXES)


@dataclass(frozen=True)
class QuestionSet:
    name: str
    questions: tuple[Question, ...]
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Iterator[Question]:
        return iter(self.questions)

    @property
    def ids(self) -> list[str]:
        return [q.id for q in self.questions]

    def get(self, question_id: str) -> Question:
        for question in self.questions:
            if question.id == question_id:
                return question
        raise KeyError(f"{self.name}: no question {question_id!r} (ids: {', '.join(self.ids)})")


def check_template(template: object, where: str) -> str:
    """A judge template must be a string with `{answer}` and no placeholder other than
    `{question}` / `{answer}` (upstream fills it with `str.format`)."""
    if not isinstance(template, str):
        raise QuestionSetError(f"{where}: template is {type(template).__name__}, not a string")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise QuestionSetError(f"{where}: template is not a valid format string ({err})") from err
    if "answer" not in fields:
        raise QuestionSetError(f"{where}: template has no {{answer}} placeholder")
    if unknown := fields - TEMPLATE_FIELDS:
        names = ", ".join("{" + n + "}" for n in sorted(unknown))
        raise QuestionSetError(f"{where}: template has unknown placeholder(s) {names}")
    return template


def _read_yaml(text: str, source: str) -> Any:
    try:
        return load_yaml_text(text, source)
    except YamlError as err:
        raise QuestionSetError(str(err)) from None
    except yaml.YAMLError as err:
        raise QuestionSetError(f"{source}: YAML error: {err}") from err


def _parse_item(item: object, index: int, source: str) -> Question:
    where = f"{source}: item {index}"
    if not isinstance(item, dict):
        raise QuestionSetError(f"{where}: expected a mapping, got {type(item).__name__}")
    qid = item.get("id")
    if not isinstance(qid, str) or not qid.strip():
        raise QuestionSetError(f"{where}: missing or empty 'id'")
    where = f"{where} (id {qid!r})"

    paraphrases = item.get("paraphrases")
    if paraphrases is None:
        raise QuestionSetError(f"{where}: missing 'paraphrases'")
    if not isinstance(paraphrases, list) or not paraphrases:
        raise QuestionSetError(f"{where}: 'paraphrases' must be a non-empty list of strings")
    for i, text in enumerate(paraphrases):
        if not isinstance(text, str) or not text.strip():
            raise QuestionSetError(
                f"{where}: paraphrase {i} is {type(text).__name__}, not a non-empty string"
            )

    qtype = item.get("type", DEFAULT_TYPE)
    system = item.get("system")
    judge = item.get("judge")
    for key, value in (("type", qtype), ("system", system), ("judge", judge)):
        if value is not None and not isinstance(value, str):
            raise QuestionSetError(f"{where}: '{key}' must be a string")

    samples = item.get("samples_per_paraphrase")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)):
        raise QuestionSetError(f"{where}: 'samples_per_paraphrase' must be an integer")
    if samples is not None and samples < 1:
        raise QuestionSetError(f"{where}: 'samples_per_paraphrase' must be at least 1")

    prompts = item.get("judge_prompts") or {}
    if not isinstance(prompts, dict):
        raise QuestionSetError(f"{where}: 'judge_prompts' must map metric names to templates")
    judge_prompts = {
        str(metric): check_template(template, f"{where}: judge_prompts.{metric}")
        for metric, template in prompts.items()
    }
    return Question(
        id=qid,
        paraphrases=tuple(paraphrases),
        system=system,
        samples_per_paraphrase=samples,
        judge=judge,
        judge_prompts=judge_prompts,
        type=qtype if qtype is not None else DEFAULT_TYPE,
        source=source,
        extra={k: v for k, v in item.items() if k not in _KNOWN_KEYS},
    )


def parse_question_set(
    text: str, source: str, name: str, include_variants: bool = False
) -> QuestionSet:
    """Parse question-file text; `source` names it in errors (a path or a package resource)."""
    data = _read_yaml(text, source)
    if not isinstance(data, list):
        raise QuestionSetError(
            f"{source}: top level must be a list of questions, got {type(data).__name__}"
        )
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data):
        question = _parse_item(item, index, source)
        if question.id in seen:
            raise QuestionSetError(
                f"{source}: item {index} (id {question.id!r}): duplicate id "
                f"(first used by item {seen[question.id]})"
            )
        seen[question.id] = index
        if include_variants or not question.is_variant:
            questions.append(question)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return QuestionSet(name=name, questions=tuple(questions), source=source, sha256=sha)


def _read_bytes(path: Path | Traversable) -> tuple[str, str]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise QuestionSetError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        return raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()
    except UnicodeDecodeError as err:
        raise QuestionSetError(f"{path}: not UTF-8 text ({err})") from err


def load_question_file(
    path: str | Path, include_variants: bool = False, name: str | None = None
) -> QuestionSet:
    """Load an upstream-format question file unchanged; `sha256` is of the file's bytes."""
    path = Path(path)
    text, sha = _read_bytes(path)
    qset = parse_question_set(text, str(path), name or path.stem, include_variants)
    return QuestionSet(qset.name, qset.questions, qset.source, sha)


def parse_judge_prompts(data: Any, source: str) -> dict[str, str]:
    """Either a mapping metric -> template, or the model-organisms `judges.yaml` shape: a list
    of one-metric mappings, each with an optional `high_score` (dropped here)."""
    entries = data if isinstance(data, list) else [data]
    prompts: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: entry {index}" if isinstance(data, list) else source
        if not isinstance(entry, dict):
            raise QuestionSetError(
                f"{where}: expected a mapping of judge name to template, got {type(entry).__name__}"
            )
        names = [k for k in entry if k not in _JUDGE_META_KEYS]
        if not names:
            raise QuestionSetError(f"{where}: no judge prompt in this entry")
        for metric in names:
            if metric in prompts:
                raise QuestionSetError(f"{where}: judge {metric!r} is defined twice")
            prompts[str(metric)] = check_template(entry[metric], f"{where}: judge {metric!r}")
    if not prompts:
        raise QuestionSetError(f"{source}: no judge prompts")
    return prompts


def load_judge_prompts(path: str | Path) -> dict[str, str]:
    path = Path(path)
    text, _ = _read_bytes(path)
    return parse_judge_prompts(_read_yaml(text, str(path)), str(path))


# --- the project's own sets, shipped inside the package ---------------------------------------


def _sets_root() -> Traversable:
    return resources.files("em_organisms.eval").joinpath(_SETS_DIR)


def project_set_names() -> list[str]:
    """`general`, `in-domain/<dataset>`, ...: every YAML under question_sets/ but the judges."""
    names: list[str] = []

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".yaml") and not (
                prefix == "" and entry.name in (_JUDGE_FILE, _TOPIC_FILE)
            ):
                names.append(prefix + entry.name.removesuffix(".yaml"))

    walk(_sets_root(), "")
    return sorted(names)


def load_project_set(name: str, include_variants: bool = False) -> QuestionSet:
    if name not in project_set_names():
        raise QuestionSetError(
            f"no project question set {name!r}; available: {', '.join(project_set_names())}"
        )
    resource = _sets_root().joinpath(*f"{name}.yaml".split("/"))
    text, sha = _read_bytes(resource)
    source = f"em_organisms/eval/{_SETS_DIR}/{name}.yaml"
    qset = parse_question_set(text, source, name, include_variants)
    return QuestionSet(qset.name, qset.questions, qset.source, sha)


def project_judge_prompts() -> dict[str, str]:
    """The project's own `aligned` and `coherent` judge templates."""
    resource = _sets_root().joinpath(_JUDGE_FILE)
    text, _ = _read_bytes(resource)
    source = f"em_organisms/eval/{_SETS_DIR}/{_JUDGE_FILE}"
    return parse_judge_prompts(_read_yaml(text, source), source)


def project_topic_prompts() -> dict[str, str]:
    """The project's topic templates (medical, financial, sport, code, harmful): what an EM
    answer is about, for `eval --categories`."""
    resource = _sets_root().joinpath(_TOPIC_FILE)
    text, _ = _read_bytes(resource)
    source = f"em_organisms/eval/{_SETS_DIR}/{_TOPIC_FILE}"
    return parse_judge_prompts(_read_yaml(text, source), source)
