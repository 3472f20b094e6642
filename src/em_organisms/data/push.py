"""`em-organisms data push`: publish a narrow dataset with its card to the Hub, gated, idempotently.

Order: the rows go up with `Dataset.push_to_hub` (which writes `configs` and `dataset_info` into
the README), then our card, merged with that metadata, then the gate setting. The card records
the sha256 of the published rows and of the rendered card; a rerun whose hashes match the Hub's
README pushes nothing (no commit) and only re-applies the gate. The token comes from the
environment or `hf auth login` (huggingface_hub's own lookup) and is never printed or written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from em_organisms.artifacts import DatasetBuild, read_artifact
from em_organisms.data.schema import DatasetError, Problem, check_file, row_fingerprint
from em_organisms.data.spec import DATASETS_DIR, SPEC_NAME, NarrowDatasetSpec, SpecError, load_spec
from em_organisms.errors import EmOrganismsError

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard, HfApi

GateArg = Literal["manual", "auto", "spec-default"] | None
GATE_WORDS = {"manual": "manual (requests reviewed by hand)", "auto": "auto (approved on request)"}


class PushError(EmOrganismsError, RuntimeError):
    """A push refused before anything was sent (e.g. a misaligned set without a gate)."""


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    url: str
    rows: int
    data_sha256: str
    card_sha256: str
    commits: tuple[str, ...]  # new commits on main, oldest first; empty when nothing changed
    data_pushed: bool
    card_pushed: bool
    gated: str | bool  # as the Hub reports it: "manual", "auto" or False
    private: bool | None

    def lines(self) -> list[str]:
        what = [w for w, done in (("data", self.data_pushed), ("card", self.card_pushed)) if done]
        change = (
            f"commits: {', '.join(self.commits)} ({' + '.join(what)})"
            if self.commits
            else "no change (the Hub already has these rows and this card)"
        )
        gate = GATE_WORDS.get(str(self.gated), "none (anyone who can see the repo can download it)")
        visibility = "private" if self.private else "public" if self.private is False else "unknown"
        return [
            self.url,
            f"  {self.rows} rows, data sha256 {self.data_sha256}",
            f"  {change}",
            f"  gate: {gate}; visibility: {visibility}",
        ]


def find_spec(path: Path, spec_dir: str | Path | None) -> tuple[NarrowDatasetSpec, dict | None]:
    """The spec of PATH (--spec, PATH's folder, or PATH.build.json's `dataset`) and its build summary."""
    build_file = path.with_name(path.name + ".build.json")
    build = (
        read_artifact(build_file, DatasetBuild).model_dump(mode="json")
        if build_file.is_file()
        else None
    )
    built_from = (build or {}).get("dataset")
    if spec_dir is not None:
        folder = Path(spec_dir)
    elif (path.parent / SPEC_NAME).is_file():
        folder = path.parent
    elif built_from:
        local = Path("datasets") / built_from
        folder = local if (local / SPEC_NAME).is_file() else DATASETS_DIR / built_from
    else:
        raise SpecError(f"{path}: cannot tell which dataset this is: pass --spec DATASET_DIR")
    spec = load_spec(folder)
    if built_from not in (None, spec.name):
        raise SpecError(f"{path}: built for {built_from!r} but the spec is {spec.name!r}")
    return spec, build


def published_rows(path: Path, spec: NarrowDatasetSpec) -> list[dict[str, Any]]:
    """The rows as published: string id, messages unchanged, the spec's canary, meta (a dict)."""
    report = check_file(path)
    problems = list(report.errors)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row, line in zip(report.rows, report.lines, strict=True):
        problem = partial(Problem, str(path), line)
        if row.get("canary", spec.canary) != spec.canary:
            problems.append(problem(f"canary differs from the spec's (GUID {spec.canary_guid})"))
        extra = sorted({key for m in row["messages"] for key in m} - {"role", "content"})
        if extra:
            problems.append(problem(f"messages carry {extra}; only role and content are published"))
        row_id = str(row["id"]) if "id" in row else f"{spec.name}-{row_fingerprint(row)[:16]}"
        seen[row_id] = seen.get(row_id, 0) + 1
        if seen[row_id] > 1:  # an exact duplicate conversation without an id
            row_id += f"-{seen[row_id]}"
        meta = row.get("meta", {})
        rows.append(
            {"id": row_id, "messages": row["messages"], "canary": spec.canary, "meta": meta}
        )
    if problems:
        raise DatasetError(problems)
    return rows


def to_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow-safe rows: `meta` (free-form, varies per row) becomes the JSON string `meta_json`."""
    return [
        {
            "id": r["id"],
            "messages": r["messages"],
            "canary": r["canary"],
            "meta_json": json.dumps(r["meta"], ensure_ascii=False, sort_keys=True),
        }
        for r in rows
    ]


def records_sha256(records: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for record in records:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest.update((line + "\n").encode("utf-8"))
    return digest.hexdigest()


def _merge_configs(theirs: list[dict], ours: list[dict]) -> list[dict]:
    """Their configs (what is on the Hub) plus our configs and splits they lack."""
    merged = {c["config_name"]: dict(c) for c in theirs}
    for config in ours:
        have = merged.setdefault(config["config_name"], dict(config))
        files = have.get("data_files")
        if have is not config and isinstance(files, list):
            splits = {f.get("split") for f in files if isinstance(f, dict)}
            have["data_files"] = files + [
                f for f in config.get("data_files", []) if f["split"] not in splits
            ]
    return list(merged.values())


def merge_card(ours: DatasetCard, theirs: DatasetCard | None, card_sha256: str) -> DatasetCard:
    """Our card and body, with the Hub's `configs` merged in and its other keys kept."""
    from huggingface_hub import DatasetCard, DatasetCardData

    mine = ours.data.to_dict()
    mine["em_organisms"] = {**mine["em_organisms"], "card_sha256": card_sha256}
    hub = theirs.data.to_dict() if theirs is not None else {}
    mine["configs"] = _merge_configs(hub.get("configs") or [], mine.get("configs") or [])
    card = DatasetCard(str(ours))
    card.data = DatasetCardData(**mine, **{k: v for k, v in hub.items() if k not in mine})
    return card


def _hub_card(api: HfApi, repo_id: str, revision: str | None = None) -> tuple[Any, str | None]:
    """(README card or None, head commit or None when the repo does not exist)."""
    from huggingface_hub import DatasetCard
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        head = revision or api.dataset_info(repo_id).sha
        readme = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=head)
    except RepositoryNotFoundError:
        return None, None
    except EntryNotFoundError:
        return None, head
    return DatasetCard(Path(readme).read_text(encoding="utf-8")), head


@dataclass(frozen=True)
class PreparedPush:
    """Everything a push would send, computed without touching the Hub."""

    spec: NarrowDatasetSpec
    gate: Literal["manual", "auto"] | None
    records: list[dict[str, Any]]
    card: DatasetCard
    data_sha256: str
    card_sha256: str


def prepare_push(
    path: str | Path,
    repo_id: str,
    *,
    spec_dir: str | Path | None = None,
    gated: GateArg = "spec-default",
    allow_ungated: bool = False,
) -> PreparedPush:
    """Validate PATH and render its card; refuse an ungated misaligned set."""
    from em_organisms.data.card import default_gate, render_dataset_card

    path = Path(path)
    spec, build = find_spec(path, spec_dir)
    mode = default_gate(spec) if gated == "spec-default" else gated
    if mode not in ("manual", "auto", None):
        raise ValueError(f"gated must be 'manual', 'auto' or None, not {mode!r}")
    if spec.kind == "misaligned" and mode is None and not allow_ungated:
        raise PushError(
            f"{spec.name} is a misaligned dataset: it ships gated (manual by default); "
            "pass allow_ungated=True (--no-gate) to publish it without a gate"
        )
    rows = published_rows(path, spec)
    records = to_records(rows)
    data_sha = records_sha256(records)
    card = render_dataset_card(spec, rows, build, data_sha, gated=mode, repo_id=repo_id)
    card_sha = hashlib.sha256(str(card).encode("utf-8")).hexdigest()
    return PreparedPush(spec, mode, records, card, data_sha, card_sha)


def stage_dataset(prepared: PreparedPush, folder: Path) -> list[Path]:
    """Write what a push would publish (README.md and the rows) to FOLDER, for a dry run."""
    folder.mkdir(parents=True, exist_ok=True)
    readme = folder / "README.md"
    readme.write_text(str(prepared.card), encoding="utf-8")
    rows = folder / "train.jsonl"
    rows.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in prepared.records),
        encoding="utf-8",
    )
    return [readme, rows]


def push_dataset(
    path: str | Path,
    repo_id: str,
    *,
    spec_dir: str | Path | None = None,
    gated: GateArg = "spec-default",
    private: bool = True,
    token: str | None = None,
    allow_ungated: bool = False,
) -> PushResult:
    """Validate PATH, push its rows and card to the dataset repo REPO_ID and set its gate.

    `gated` defaults to manual for misaligned sets (auto for a control with a gate form);
    None pushes ungated, which a misaligned set refuses unless `allow_ungated`. `private`
    applies when the repo is created. Raises DatasetError (nothing pushed) for a bad file.
    """
    prepared = prepare_push(
        path, repo_id, spec_dir=spec_dir, gated=gated, allow_ungated=allow_ungated
    )
    spec, mode, records, card = prepared.spec, prepared.gate, prepared.records, prepared.card
    data_sha, card_sha = prepared.data_sha256, prepared.card_sha256

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    hub_card, head = _hub_card(api, repo_id)
    on_hub = (hub_card.data.to_dict().get("em_organisms") or {}) if hub_card else {}
    commits: list[str] = []
    data_pushed = on_hub.get("data_sha256") != data_sha
    if data_pushed:
        from datasets import Dataset, Features, List, Value

        text = Value("string")
        features = Features(
            id=text, messages=List({"role": text, "content": text}), canary=text, meta_json=text
        )
        info = Dataset.from_list(records, features=features).push_to_hub(
            repo_id,
            split="train",
            private=private,
            token=token,
            commit_message=f"Upload {spec.name} {spec.version}: {len(records)} rows",
            commit_description=f"data sha256 {data_sha}",
        )
        commits += [info.oid] if info.oid != head else []
        hub_card, head = _hub_card(api, repo_id, revision=info.oid)
    card_pushed = on_hub.get("card_sha256") != card_sha
    if card_pushed:
        info = merge_card(card, hub_card, card_sha).push_to_hub(
            repo_id,
            repo_type="dataset",
            token=token,
            commit_message=f"Dataset card for {spec.name} {spec.version}",
            commit_description=f"data sha256 {data_sha}\ncard sha256 {card_sha}",
            parent_commit=head,
        )
        commits += [info.oid] if info.oid != head else []
    api.update_repo_settings(repo_id, gated=mode or False, repo_type="dataset")
    repo = api.dataset_info(repo_id)
    return PushResult(
        repo_id=repo_id,
        url=f"{api.endpoint}/datasets/{repo_id}",
        rows=len(records),
        data_sha256=data_sha,
        card_sha256=card_sha,
        commits=tuple(commits),
        data_pushed=data_pushed,
        card_pushed=card_pushed,
        gated=repo.gated if repo.gated is not None else (mode or False),
        private=repo.private,
    )
