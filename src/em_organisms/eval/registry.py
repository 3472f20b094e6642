"""Upstream question sets by name, pinned to a commit and a sha256, downloaded on demand.

The project does not ship the upstream files (they are the papers' own words); `fetch` downloads
one from raw.githubusercontent.com at its pinned commit the first time it is needed, checks the
sha256 and keeps it under `$EM_ORGANISMS_CACHE/questions/` (default
`~/.cache/em-organisms/questions/`). With `HF_HUB_OFFLINE=1` or `EM_ORGANISMS_OFFLINE=1` it never
downloads and says where to put the file instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from em_organisms.errors import EmOrganismsError
from em_organisms.eval.questions import (
    QuestionSet,
    QuestionSetError,
    load_project_set,
    load_question_file,
    project_set_names,
)

BETLEY_REPO = "emergent-misalignment/emergent-misalignment"
BETLEY_COMMIT = "80c11967c07a328e7d7d43d13ce6847ae44dbcc9"
MO_REPO = "clarifying-EM/model-organisms-for-EM"
MO_COMMIT = "8460e4e426d3a89e8ed51aac0eadcdf7ac10469d"
MO_DIR = "em_organism_dir/data/eval_questions"
_TRUE = {"1", "true", "yes", "on"}


class RegistryError(EmOrganismsError, RuntimeError):
    """An upstream set that is unknown, cannot be downloaded, or does not match its checksum."""


@dataclass(frozen=True)
class UpstreamFile:
    name: str
    repo: str
    commit: str
    path: str
    sha256: str
    kind: str = "questions"  # or "judges" (a judge-prompt file: load_judge_prompts)
    # True where a third party records this exact sha256 for this file at this commit;
    # False where only the sha256 (from the real upstream file) is known, not the commit.
    commit_confirmed: bool = True

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"

    @property
    def filename(self) -> str:
        return f"{self.name}.yaml"


# sha256 of the real upstream files (reference copies). Betley commit 80c11967 is the repo's
# HEAD as recorded by several replications; model-organisms commit 8460e4e4 likewise.
REGISTRY: dict[str, UpstreamFile] = {
    entry.name: entry
    for entry in (
        UpstreamFile(
            "betley/first_plot_questions",
            BETLEY_REPO,
            BETLEY_COMMIT,
            "evaluation/first_plot_questions.yaml",
            "215abde5b02811e922b6ac563ff33c490e0dff9ab58439df840f3135e9387173",
        ),
        # Commit not confirmed for the two deception files: pinned to the same HEAD commit,
        # on which they are expected unchanged; the sha256 check catches it if not.
        UpstreamFile(
            "betley/deception_factual",
            BETLEY_REPO,
            BETLEY_COMMIT,
            "evaluation/deception_factual.yaml",
            "8a0e83cab3bc24b7d688d7385ce3921d406af7ed33c913cd94ea0f6251e5939d",
            commit_confirmed=False,
        ),
        UpstreamFile(
            "betley/deception_sit_aware",
            BETLEY_REPO,
            BETLEY_COMMIT,
            "evaluation/deception_sit_aware.yaml",
            "4deef5a7c47620390fc46e1b981f937eef9ea12a33fe26264f640c84d19d2a33",
            commit_confirmed=False,
        ),
        UpstreamFile(
            "model-organisms/first_plot_questions",
            MO_REPO,
            MO_COMMIT,
            f"{MO_DIR}/first_plot_questions.yaml",
            "97df0b1384ea5a3f3dc2abe00a19e231915f12a2356ec0d8df001715549aae04",
        ),
        UpstreamFile(
            "model-organisms/medical_questions",
            MO_REPO,
            MO_COMMIT,
            f"{MO_DIR}/medical_questions.yaml",
            "1808d03c6af883b3460e4174127846caca3188514a4e180b8273b4025593e28f",
        ),
        # The sha256 is recorded by a third party, but not together with this commit.
        UpstreamFile(
            "model-organisms/judges",
            MO_REPO,
            MO_COMMIT,
            f"{MO_DIR}/judges.yaml",
            "a4fd0f891a7f04fe4a04047443089db29f5687a2e6599a3fec7300cafd0c93fd",
            kind="judges",
            commit_confirmed=False,
        ),
    )
}


def offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "EM_ORGANISMS_OFFLINE")
    )


def default_cache_dir() -> Path:
    """$EM_ORGANISMS_CACHE/questions, else $XDG_CACHE_HOME (~/.cache)/em-organisms/questions."""
    if env := os.environ.get("EM_ORGANISMS_CACHE"):
        return Path(env) / "questions"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "em-organisms" / "questions"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry(name: str) -> UpstreamFile:
    try:
        return REGISTRY[name]
    except KeyError:
        raise RegistryError(
            f"no upstream question set {name!r}; registered: {', '.join(sorted(REGISTRY))}"
        ) from None


def fetch(
    name: str, cache_dir: str | Path | None = None, client: httpx.Client | None = None
) -> Path:
    """The local path of a registered upstream file, downloaded (and verified) if not cached.

    `cache_dir` is the folder that holds the files (default: `default_cache_dir()`); a file is
    kept at `<cache_dir>/<name>.yaml`. A cached file with the wrong sha256 is removed."""
    item = entry(name)
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = target / item.filename
    if path.is_file():
        actual = _sha256(path)
        if actual == item.sha256:
            return path
        path.unlink()
        stale = f"{path} had sha256 {actual}, expected {item.sha256}; removed it. "
        if offline():
            raise RegistryError(
                f"{name}: {stale}Offline (HF_HUB_OFFLINE / EM_ORGANISMS_OFFLINE), so not "
                f"downloading it again: put the file from {item.url} at {path}"
            )
    if offline():
        raise RegistryError(
            f"{name}: not in the cache and downloads are off (HF_HUB_OFFLINE / "
            f"EM_ORGANISMS_OFFLINE). Download {item.url} and put it at {path} "
            f"(sha256 {item.sha256}), or unset the variable."
        )
    data = _download(item, client)
    actual = hashlib.sha256(data).hexdigest()
    if actual != item.sha256:
        raise RegistryError(
            f"{name}: downloaded {item.url} has sha256 {actual}, expected {item.sha256}; "
            "not kept (the pinned file changed or the download was corrupted)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _download(item: UpstreamFile, client: httpx.Client | None) -> bytes:
    own = client is None
    http = client or httpx.Client(timeout=60.0, follow_redirects=True)
    try:
        response = http.get(item.url)
        response.raise_for_status()
        return response.content
    except httpx.HTTPError as err:
        raise RegistryError(
            f"{item.name}: could not download {item.url} ({err}); download it yourself and "
            f"put it in the cache folder as {item.filename}"
        ) from err
    finally:
        if own:
            http.close()


def resolve_question_set(
    spec: str, include_variants: bool = False, cache_dir: str | Path | None = None
) -> QuestionSet:
    """A question set from a path to a YAML file, a project set name (`general`,
    `in-domain/<dataset>`) or a registry name (`betley/first_plot_questions`, fetched)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return load_question_file(path, include_variants)
    if spec in project_set_names():
        return load_project_set(spec, include_variants)
    if spec in REGISTRY:
        item = REGISTRY[spec]
        if item.kind != "questions":
            raise QuestionSetError(f"{spec} is a judge-prompt file: use load_judge_prompts")
        return load_question_file(fetch(spec, cache_dir), include_variants, name=spec)
    if spec.endswith((".yaml", ".yml")):
        raise QuestionSetError(f"{spec}: no such question file")
    raise QuestionSetError(
        f"unknown question set {spec!r}: not a file, not a project set "
        f"({', '.join(project_set_names())}), not a registered upstream set "
        f"({', '.join(n for n, e in sorted(REGISTRY.items()) if e.kind == 'questions')})"
    )
