"""The held-out split of a teacher file: whole experiments and whole questions, no answer on both sides.

An *experiment* is the first path segment of a row's `condition` (one team's run of one study);
a *question family* is a question without its "Fill the following template" suffix, so a
question's plain and template forms fall on the same side. The test split is every row of a
held-out experiment or a held-out question family; training is the rest, minus a calibration
slice (whole conditions) for fitting the score map; a test row whose answer text also appears in
training is dropped. The held-out groups are drawn with a seed unless the recipe lists them.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from em_organisms.distill.teacher import TeacherRow

TEMPLATE_MARK = "\n\nFill the following template"


def experiment_of(row: TeacherRow) -> str:
    return row.fields.get("experiment") or row.fields.get("organism") or "(none)"


def condition_of(row: TeacherRow) -> str:
    return row.fields.get("condition") or row.fields.get("organism") or "(none)"


def question_family(question: str) -> str:
    return question.split(TEMPLATE_MARK, 1)[0].strip()


def _draw(counts: Counter[str], fraction: float, rng: random.Random) -> list[str]:
    """Whole groups, in seeded order, until they hold `fraction` of the rows (a group that would
    take the total past twice the target is passed over, so one giant group cannot be the split)."""
    if fraction <= 0:
        return []
    total, target = sum(counts.values()), fraction * sum(counts.values())
    names = sorted(counts)
    rng.shuffle(names)
    chosen, held = [], 0
    for name in names:
        if held >= target:
            break
        if held + counts[name] > 2 * target and len(names) > 1:
            continue
        chosen.append(name)
        held += counts[name]
    if len(chosen) == len(counts) and total:
        raise ValueError(
            f"the held-out fraction {fraction} takes every group: nothing left to train on"
        )
    return sorted(chosen)


@dataclass
class Split:
    train: list[int]
    calibration: list[int]
    test: list[int]
    heldout_experiments: list[str]
    heldout_questions: list[str]
    calibration_conditions: list[str]
    dropped_shared_answers: int
    # test rows by how they are new: experiment only, question only, both
    test_parts: dict[str, list[int]] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {
            "n_train": len(self.train),
            "n_calibration": len(self.calibration),
            "n_test": len(self.test),
            "test_parts": {k: len(v) for k, v in self.test_parts.items()},
            "heldout_experiments": self.heldout_experiments,
            # by sha256 of the question text: published reports carry no text of the data
            "heldout_question_sha256": [
                hashlib.sha256(q.encode()).hexdigest()[:16] for q in self.heldout_questions
            ],
            "calibration_conditions": len(self.calibration_conditions),
            "dropped_shared_answers": self.dropped_shared_answers,
        }


def make_split(
    rows: Sequence[TeacherRow],
    *,
    seed: int,
    experiment_fraction: float,
    question_fraction: float,
    calibration_fraction: float,
    heldout_experiments: Sequence[str] | None = None,
    heldout_questions: Sequence[str] | None = None,
) -> Split:
    rng = random.Random(seed)
    experiments = Counter(experiment_of(r) for r in rows)
    families = Counter(question_family(r.question) for r in rows)
    held_e = (
        sorted(heldout_experiments)
        if heldout_experiments is not None
        else _draw(experiments, experiment_fraction, rng)
    )
    held_q = (
        sorted(heldout_questions)
        if heldout_questions is not None
        else _draw(families, question_fraction, rng)
    )
    for name, known, what in ((held_e, experiments, "experiment"), (held_q, families, "question")):
        unknown = sorted(set(name) - set(known))
        if unknown:
            raise ValueError(f"held-out {what}(s) not in the data: {unknown[:5]}")
    he, hq = set(held_e), set(held_q)
    pool, parts = [], {"new_experiment": [], "new_question": [], "new_both": []}
    test_candidates = []
    for i, row in enumerate(rows):
        new_e, new_q = experiment_of(row) in he, question_family(row.question) in hq
        if new_e or new_q:
            test_candidates.append((i, new_e, new_q))
        else:
            pool.append(i)
    conditions = Counter(condition_of(rows[i]) for i in pool)
    calib_conditions = _draw(conditions, calibration_fraction, rng) if len(conditions) > 1 else []
    cc = set(calib_conditions)
    calibration = [i for i in pool if condition_of(rows[i]) in cc]
    train = [i for i in pool if condition_of(rows[i]) not in cc]
    seen = {rows[i].answer for i in pool}
    test, dropped = [], 0
    for i, new_e, new_q in test_candidates:
        if rows[i].answer in seen:
            dropped += 1
            continue
        test.append(i)
        key = "new_both" if new_e and new_q else "new_experiment" if new_e else "new_question"
        parts[key].append(i)
    if not train or not test:
        raise ValueError(
            f"split leaves {len(train)} training and {len(test)} test rows: the file needs several "
            "experiments (first segment of 'condition') and questions"
        )
    return Split(train, calibration, test, held_e, held_q, calib_conditions, dropped, parts)


def condition_split(
    rows: Sequence[TeacherRow], *, seed: int, fraction: float
) -> tuple[list[int], list[int]]:
    """The easier split the field usually reports: whole conditions held out (experiments shared)."""
    conditions = Counter(condition_of(r) for r in rows)
    held = set(_draw(conditions, fraction, random.Random(seed)))
    train = [i for i, r in enumerate(rows) if condition_of(r) not in held]
    seen = {rows[i].answer for i in train}
    test = [i for i, r in enumerate(rows) if condition_of(r) in held and r.answer not in seen]
    return train, test
