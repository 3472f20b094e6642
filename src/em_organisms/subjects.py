"""What an evaluation samples from: a base model alone, or a base model and its organism.

`MODEL_OR_RECIPE` may be a recipe YAML (its trained organism under RUNS_DIR/ORGANISM_ID, see `paths`, or
`organism_dir`), an organism folder (an adapter), or a plain model (Hub id, folder, embedded).
With `load_weights=False` only the tokenizer is loaded: an engine that loads the weights itself
(vLLM) needs no second copy in this process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from em_organisms.adapters import Organism, base_spec_for, load_organism
from em_organisms.artifacts import OrganismRun
from em_organisms.artifacts.names import MODEL_CONFIG
from em_organisms.models import ModelLoadError, load_base_model, load_tokenizer, resolve_model
from em_organisms.recipes import Recipe, load_recipe


@dataclass
class Subject:
    name: str
    base_model: str  # Hub id when known
    model: PreTrainedModel | None  # None when loaded without weights
    tokenizer: PreTrainedTokenizerBase
    organism: Organism | None = None
    adapter: str | None = None
    recipe: Recipe | None = None
    base_spec: str = ""  # what models.resolve_model loads: 'embedded', a folder or a Hub id

    @property
    def has_adapter(self) -> bool:
        return self.adapter is not None

    @property
    def recipe_sha256(self) -> str | None:
        return self.recipe.sha256() if self.recipe else None

    @contextlib.contextmanager
    def adapter_state(self, which: str, scale: float = 1.0) -> Iterator[None]:
        """The adapter off for "base", on at SCALE for "organism"."""
        if self.model is None:
            raise ModelLoadError(f"{self.name} was loaded without weights")
        if self.organism is None:
            if which != "base":
                raise ModelLoadError(f"{self.name} has no adapter to switch on")
            yield
            return
        context = self.organism.base() if which == "base" else self.organism.scaled(scale)
        with context:
            yield


def recipe_path(spec: str) -> Path | None:
    """The recipe behind MODEL_OR_RECIPE: the YAML itself, or the `recipe.yaml` a trained run
    folder carries (as trained: a seed variant's own seed and id)."""
    from em_organisms.resources import builtin_recipe

    path = Path(spec)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    if path.is_dir() and OrganismRun(path).recipe_path.is_file():
        return OrganismRun(path).recipe_path
    return None if path.exists() else builtin_recipe(spec)


def base_model_location(spec: str) -> str:
    """Where the base model under MODEL_OR_RECIPE lives (a folder or a Hub id), loading nothing:
    what its generation config is read from."""
    path = Path(spec)
    if (recipe := recipe_path(spec)) is not None:
        base = load_recipe(recipe).base_model
    elif OrganismRun(path).is_lora:
        base = base_spec_for(str(path))
    else:
        base = spec
    return resolve_model(base).location


def default_organism_dir(recipe: Recipe) -> Path:
    from em_organisms.paths import organism_dir

    return organism_dir(recipe.organism_id)


def load_subject(
    spec: str,
    organism_dir: str | Path | None = None,
    device: str | None = None,
    load_weights: bool = True,
) -> Subject:
    path = Path(spec)
    yaml_file = recipe_path(spec)
    if yaml_file is not None and yaml_file.parent != path:  # a recipe (by path or built-in name)
        recipe = load_recipe(yaml_file)
        folder = Path(organism_dir) if organism_dir else default_organism_dir(recipe)
        if recipe.protocol.kind != "lora":
            return _plain(str(folder), recipe.organism_id, recipe, device, load_weights)
        if not OrganismRun(folder).is_lora:
            raise ModelLoadError(
                f"{folder}: no trained organism; run `em-organisms train {spec}` first "
                "(or pass --organism-dir)"
            )
        return _with_adapter(folder, recipe.organism_id, recipe, device, load_weights)
    run = OrganismRun(path)
    recipe = load_recipe(run.recipe_path) if run.recipe_path.is_file() else None
    if run.is_lora:
        return _with_adapter(path, path.name, recipe, device, load_weights)
    if recipe is not None and run.path(MODEL_CONFIG).is_file():  # a full fine-tune's run
        return _plain(str(path), recipe.organism_id, recipe, device, load_weights)
    return _plain(spec, spec, None, device, load_weights)


def _with_adapter(
    folder: Path, name: str, recipe: Recipe | None, device: str | None, load_weights: bool
) -> Subject:
    if not load_weights:
        base = base_spec_for(str(folder))
        tokenizer = load_tokenizer(base)
        return Subject(name, _hub_id(base), None, tokenizer, None, str(folder), recipe, base)
    organism = load_organism(str(folder), device=device)
    return Subject(
        name,
        _hub_id(organism.base_model),
        organism.model,
        organism.tokenizer,
        organism,
        str(folder),
        recipe,
        organism.base_model,
    )


def _hub_id(spec: str) -> str:
    return resolve_model(spec).hub_id or spec


def _plain(
    spec: str, name: str, recipe: Recipe | None, device: str | None, load_weights: bool
) -> Subject:
    source = resolve_model(spec)
    if not load_weights:
        return Subject(
            name, source.hub_id or spec, None, load_tokenizer(spec), None, None, recipe, spec
        )
    model, tokenizer = load_base_model(spec, device=device)
    model.eval()
    return Subject(name, source.hub_id or spec, model, tokenizer, None, None, recipe, spec)
