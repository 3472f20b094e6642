"""Judges: what scores an answer's `aligned` and `coherent` (0-100), behind one protocol.

- `scores`: `Score` (a number or unscored, with why) and reading one from log-probabilities or
  text.
- `prompted`: `JudgeItem`, the `Judge` protocol, the score cache, and the prompt judges
  (`OpenAIJudge` for any OpenAI-compatible endpoint, `LocalJudge` for a local model).
- `number_distribution`: a local model's expected score over the number tokens 0..100.
- `distilled`: the student judge distilled from GPT-4o's scores (trained by `em_organisms.distill`).
- `factory`: `make_judge(SPEC)` and `judge_agreement`.

What is judged and how it is counted lives in `em_organisms.eval`.
"""

from em_organisms.judges.factory import judge_agreement, make_judge
from em_organisms.judges.prompted import (
    LOGPROB_PARAMS,
    REASONING_MODEL,
    REASONING_TEXT_PARAMS,
    TEXT_PARAMS,
    CachedJudge,
    Judge,
    JudgeItem,
    LocalJudge,
    MetricJudge,
    OpenAIJudge,
    PromptJudge,
    ScoreCache,
    default_cache_path,
    render_judge_prompt,
)
from em_organisms.judges.scores import Score

__all__ = [
    "LOGPROB_PARAMS",
    "REASONING_MODEL",
    "REASONING_TEXT_PARAMS",
    "TEXT_PARAMS",
    "CachedJudge",
    "Judge",
    "JudgeItem",
    "LocalJudge",
    "MetricJudge",
    "OpenAIJudge",
    "PromptJudge",
    "Score",
    "ScoreCache",
    "default_cache_path",
    "judge_agreement",
    "make_judge",
    "render_judge_prompt",
]
