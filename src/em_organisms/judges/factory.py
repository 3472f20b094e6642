"""`make_judge(SPEC)`: a judge from its spec string, wrapped in the score cache.

`openai:MODEL`, `hf:PATH_OR_ID`, `embedded` (prompt judges, `prompted`), `distilled` and
`distilled:PATH_OR_HUB_ID` (a student, `distilled`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from em_organisms.judges.prompted import (
    CachedJudge,
    Judge,
    LocalJudge,
    OpenAIJudge,
    ScoreCache,
    default_cache_path,
)


def judge_agreement(judge: Judge) -> dict[str, Any] | None:
    """A distilled judge's held-out agreement with its teacher (None for other judges)."""
    inner = getattr(judge, "inner", judge)
    return getattr(inner, "agreement", None)


def make_judge(
    spec: str,
    *,
    base_url: str | None = None,
    cache: Path | bool | None = True,
    device: str | None = None,
    **backend_options: Any,
) -> Judge:
    """`openai:MODEL`, `hf:PATH_OR_ID`, `embedded`, `distilled` or `distilled:PATH_OR_HUB_ID`,
    wrapped in the disk cache unless cache=False."""
    if spec.startswith("openai:"):
        inner: Judge = OpenAIJudge(spec.removeprefix("openai:"), base_url, **backend_options)
    elif spec == "embedded" or spec.startswith("hf:"):
        inner = LocalJudge(spec.removeprefix("hf:"), device=device)
    elif spec == "distilled" or spec.startswith("distilled:"):
        from em_organisms.judges.distilled import DistilledJudge

        inner = DistilledJudge(spec.removeprefix("distilled").removeprefix(":") or None)
    else:
        from em_organisms.backends import BackendConfigError

        raise BackendConfigError(
            f"unknown judge {spec!r}: use openai:MODEL, hf:PATH_OR_ID, embedded, distilled or "
            "distilled:PATH_OR_HUB_ID"
        )
    if cache is False:
        return inner
    path = default_cache_path() if cache is True or cache is None else cache
    return CachedJudge(inner, ScoreCache(path))
