"""The checkout and the upstream reference files (read, never copied into the project)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

REFERENCE = REPO_ROOT.parent / "shared" / "reference"

BETLEY = REFERENCE / "em-betley" / "evaluation"

MO = REFERENCE / "em-model-organisms" / "eval_questions"

# registry name -> reference copy of the same upstream file
REFERENCE_COPIES = {
    "betley/first_plot_questions": BETLEY / "first_plot_questions.yaml",
    "betley/deception_factual": BETLEY / "deception_factual.yaml",
    "betley/deception_sit_aware": BETLEY / "deception_sit_aware.yaml",
    "model-organisms/first_plot_questions": MO / "first_plot_questions.yaml",
    "model-organisms/medical_questions": MO / "medical_questions.yaml",
    "model-organisms/judges": MO / "judges.yaml",
}
