"""Evaluation: sample answers, judge them, count EM with intervals, report.

- `protocol` / `protocols/`: the versioned evaluation protocols (`paper`, `betley`, `project`);
  `plan` resolves a protocol, a recipe's `evaluation:` section and the command line into one
  recorded `EvalPlan` (`eval --plan`).
- `questions`, `question_sets/`, `judge_prompts`, `categories`: what is asked and how it is judged.
- `engines` (transformers), `vllm_engine`, `sampler`: resumable sampling of base and organism.
- `judges` (the judge protocol and `make_judge`), `scoring` (logprob/text scores), `local_judge`,
  `registry`, `judging` (a samples file in, a judged file out).
- `metrics`, `report`, `calibration`, `compare`, `compare_plots`: EM rates, Wilson intervals,
  `summary.json`/`report.md`, the judge's AUROC on labelled pairs, and organisms side by side.
- `pipeline`: `eval` end to end; `commands`: the `sample`, `judge`, `report`, `eval`, `compare`
  subcommands.
"""
