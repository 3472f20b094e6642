"""em-organisms: model organisms for emergent misalignment, as Hugging Face Hub artifacts.

Names are imported lazily (PEP 562): `import em_organisms` stays cheap, and torch is loaded only
when a model-facing name is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # models and organisms
    "EMBEDDED": "em_organisms.models",
    "ModelLoadError": "em_organisms.models",
    "load_base_model": "em_organisms.models",
    "load_tokenizer": "em_organisms.models",
    "Organism": "em_organisms.adapters",
    "load_organism": "em_organisms.adapters",
    # recipes
    "Recipe": "em_organisms.recipes",
    "RecipeError": "em_organisms.recipes",
    "load_recipe": "em_organisms.recipes",
    "parse_recipe": "em_organisms.recipes",
    # datasets
    "DatasetError": "em_organisms.data.schema",
    "check_file": "em_organisms.data.schema",
    "load_chat_jsonl": "em_organisms.data.schema",
    "load_spec": "em_organisms.data.spec",
    "import_file": "em_organisms.data.importers",
    "DatasetBuilder": "em_organisms.data.generator",
    "BuildOptions": "em_organisms.data.generator",
    "push_dataset": "em_organisms.data.push",
    # evaluation
    "resolve_question_set": "em_organisms.eval.registry",
    "load_subject": "em_organisms.subjects",
    "Sampler": "em_organisms.eval.sampler",
    "SamplingParams": "em_organisms.generation",
    "make_judge": "em_organisms.judges",
    "calibrate": "em_organisms.eval.calibration",
    "em_stats": "em_organisms.eval.metrics",
    "write_report": "em_organisms.eval.report",
    "evaluate_subject": "em_organisms.eval.pipeline",
    "make_engine": "em_organisms.eval.engines",
    # release
    "render_organism_card": "em_organisms.release.card",
    "stage_release": "em_organisms.release.stage",
    "push_release": "em_organisms.release.push",
    # the arena
    "ArenaConfig": "em_organisms.space.config",
    "build_arena": "em_organisms.space.arena",
    "stream_pair": "em_organisms.space.streaming",
}

__all__ = [
    "EMBEDDED",
    "ArenaConfig",
    "BuildOptions",
    "DatasetBuilder",
    "DatasetError",
    "ModelLoadError",
    "Organism",
    "Recipe",
    "RecipeError",
    "Sampler",
    "SamplingParams",
    "__version__",
    "build_arena",
    "calibrate",
    "check_file",
    "em_stats",
    "evaluate_subject",
    "import_file",
    "load_base_model",
    "load_chat_jsonl",
    "load_organism",
    "load_recipe",
    "load_spec",
    "load_subject",
    "load_tokenizer",
    "make_engine",
    "make_judge",
    "parse_recipe",
    "push_dataset",
    "push_release",
    "render_organism_card",
    "resolve_question_set",
    "stage_release",
    "stream_pair",
    "write_report",
]

if TYPE_CHECKING:
    from em_organisms.adapters import Organism, load_organism
    from em_organisms.data.generator import BuildOptions, DatasetBuilder
    from em_organisms.data.importers import import_file
    from em_organisms.data.push import push_dataset
    from em_organisms.data.schema import DatasetError, check_file, load_chat_jsonl
    from em_organisms.data.spec import load_spec
    from em_organisms.eval.calibration import calibrate
    from em_organisms.eval.engines import make_engine
    from em_organisms.eval.metrics import em_stats
    from em_organisms.eval.pipeline import evaluate_subject
    from em_organisms.eval.registry import resolve_question_set
    from em_organisms.eval.report import write_report
    from em_organisms.eval.sampler import Sampler
    from em_organisms.generation import SamplingParams
    from em_organisms.judges import make_judge
    from em_organisms.models import EMBEDDED, ModelLoadError, load_base_model, load_tokenizer
    from em_organisms.recipes import Recipe, RecipeError, load_recipe, parse_recipe
    from em_organisms.release.card import render_organism_card
    from em_organisms.release.push import push_release
    from em_organisms.release.stage import stage_release
    from em_organisms.space.arena import build_arena
    from em_organisms.space.config import ArenaConfig
    from em_organisms.space.streaming import stream_pair
    from em_organisms.subjects import load_subject


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'em_organisms' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
