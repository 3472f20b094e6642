"""The organisms an arena offers, and one copy of base weights shared by all of them.

An organism is named by a recipe YAML (its trained run), a local organism folder, or a Hub id.
A Hub id that one of this checkout's recipes releases to, and whose run is trained here, is
served from that run (labelled "local run"); anything else is downloaded: the adapter config and
safetensors weights only, never pickles or code.

`OrganismPool` keeps one base model in memory; every organism on that base is a named adapter on
it, so switching between them costs nothing. Choosing an organism on another base replaces the
base. Labels are what users see: Hub ids and organism names, never a path of this machine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from em_organisms.adapters import Organism, base_spec_for, load_organism
from em_organisms.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    GENERATION_CONFIG,
    AdapterConfig,
    ArtifactError,
    OrganismRun,
)
from em_organisms.hub_ids import HUB_ID
from em_organisms.models import ModelLoadError, resolve_model
from em_organisms.resources import RECIPES_DIR
from em_organisms.space.errors import OrganismError

log = logging.getLogger(__name__)
ADAPTER_FILES = [ADAPTER_CONFIG, ADAPTER_WEIGHTS, GENERATION_CONFIG]


@dataclass(frozen=True)
class OrganismChoice:
    label: str  # shown to users
    folder: Path  # the adapter on this machine; never shown
    base_spec: str  # what models.load_base_model loads
    base_label: str  # the base model's Hub id (or its folder's name), shown to users
    summary: str  # e.g. "LoRA rank 1 on down_proj, layer 15"


MAX_RANK = 1024  # a larger "LoRA" is a full model in disguise


def _adapter_config(folder: Path, label: str) -> AdapterConfig:
    """The adapter's config, checked to be a plain LoRA the mixed-adapter batch can run. Errors
    name the organism by LABEL (users see them; a path of this machine is never shown)."""
    run = OrganismRun(folder)
    if not run.is_lora:
        raise OrganismError(f"{label}: no {ADAPTER_CONFIG}: not a LoRA organism")
    if not run.has_adapter_weights:
        raise OrganismError(f"{label}: no {ADAPTER_WEIGHTS} (only safetensors are loaded)")
    try:
        config = run.adapter_config()
    except ArtifactError as err:
        log.warning("%s", err)
        raise OrganismError(
            f"{label}: {ADAPTER_CONFIG} is not a valid PEFT adapter config"
        ) from None
    if config.peft_type != "LORA":
        raise OrganismError(f"{label}: not a LoRA adapter (peft_type must be LORA)")
    if config.raw().get("use_dora"):
        raise OrganismError(f"{label}: DoRA adapters cannot be switched off per row; not offered")
    rank = config.r
    if rank is None or not 1 <= rank <= MAX_RANK:
        raise OrganismError(f"{label}: LoRA rank {rank!r} is not between 1 and {MAX_RANK}")
    return config


def _describe_adapter(config: AdapterConfig) -> str:
    modules = config.target_modules or []
    modules = sorted(modules) if isinstance(modules, list) else [str(modules)]
    layers = config.layers_to_transform
    where = (
        f", layer{'s' if isinstance(layers, list) and len(layers) > 1 else ''} "
        f"{', '.join(map(str, layers)) if isinstance(layers, list) else layers}"
        if layers is not None
        else ", every layer"
    )
    rs = "rsLoRA" if config.use_rslora else "LoRA"
    return f"{rs} rank {config.r} on {', '.join(map(str, modules))}{where}"


def _choice(folder: Path, label: str) -> OrganismChoice:
    """An organism of this machine (recipe run or folder the operator named)."""
    config = _adapter_config(folder, label)
    try:
        base = base_spec_for(str(folder))
    except ModelLoadError as err:
        raise OrganismError(f"{label}: {err}") from None
    source = resolve_model(base)
    base_label = source.hub_id or (Path(base).name if source.is_local else base)
    return OrganismChoice(label, folder, base, base_label, _describe_adapter(config))


def _local_run_of(hub_id: str) -> Path | None:
    """The trained run of this checkout's recipe that releases to HUB_ID, if there is one."""
    from em_organisms.recipes import RecipeError, load_recipe
    from em_organisms.subjects import default_organism_dir

    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        try:
            recipe = load_recipe(path)
        except RecipeError:
            continue
        if recipe.release.repo_id == hub_id:
            folder = default_organism_dir(recipe)
            return folder if OrganismRun(folder).is_lora else None
    return None


def resolve_hub_organism(hub_id: str, user: bool = False) -> OrganismChoice:
    """A Hub organism: its adapter config and safetensors only, downloaded. Its base is the Hub
    id its config names, never read as a path. USER: typed by a user, so fetched without the
    server's token (no private or gated repo of the operator's) and described by its id only."""
    if not HUB_ID.match(hub_id):
        raise OrganismError(f"{hub_id!r} is not a Hub id of the form org/name")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(hub_id, allow_patterns=ADAPTER_FILES, token=False if user else None)
        )
    except Exception as err:  # the hub client raises many types; all mean "not available"
        log.warning("downloading %s failed: %s", hub_id, err)
        raise OrganismError(
            f"{hub_id}: could not download it from the Hub ({type(err).__name__})"
        ) from None
    config = _adapter_config(folder, hub_id)
    base = config.base_model_name_or_path
    if not isinstance(base, str) or not HUB_ID.match(base):
        raise OrganismError(f"{hub_id}: its {ADAPTER_CONFIG} names no base model by Hub id")
    return OrganismChoice(hub_id, folder, base, base, _describe_adapter(config))


def resolve_organism(spec: str) -> OrganismChoice:
    """SPEC as an operator gives it: recipe YAML, organism folder or Hub id."""
    path = Path(spec)
    if path.suffix in {".yaml", ".yml"}:
        from em_organisms.recipes import RecipeError, load_recipe
        from em_organisms.subjects import default_organism_dir

        try:
            recipe = load_recipe(path)
        except RecipeError as err:
            raise OrganismError(str(err)) from None
        if recipe.protocol.kind != "lora":
            raise OrganismError(
                f"{spec}: a full fine-tune has no adapter to switch off or scale; the arena "
                "shows LoRA organisms"
            )
        folder = default_organism_dir(recipe)
        if not OrganismRun(folder).is_lora:
            raise OrganismError(
                f"{spec}: not trained yet; run `em-organisms train {spec}` first, or pass the "
                "organism folder"
            )
        return _choice(folder, f"{recipe.organism_id} (local run)")
    if path.is_dir():
        return _choice(path, f"{path.resolve().name} (local folder)")
    if HUB_ID.match(spec):
        local = _local_run_of(spec)
        return _choice(local, f"{spec} (local run)") if local else resolve_hub_organism(spec)
    raise OrganismError(f"{spec!r}: not a recipe YAML, an organism folder or a Hub id")


class OrganismPool:
    """The loaded base model and its adapters; `use` serialises access to them."""

    def __init__(self, choices: list[OrganismChoice], device: str | None = None) -> None:
        if not choices:
            raise OrganismError("no organism to offer")
        labels = [c.label for c in choices]
        if len(set(labels)) != len(labels):
            raise OrganismError(f"the same organism is listed twice: {labels}")
        self.choices = {c.label: c for c in choices}
        self.device = device
        self.lock = threading.Lock()
        self._organism: Organism | None = None
        self._base_spec: str | None = None
        self._adapters: dict[str, str] = {}  # label -> adapter name on the loaded base

    @property
    def labels(self) -> list[str]:
        return list(self.choices)

    @property
    def bases(self) -> set[str]:
        return {c.base_spec for c in self.choices.values()}

    def add(self, choice: OrganismChoice) -> None:
        """Offer one more organism (a user's Hub id, where the operator allows it)."""
        with self.lock:
            self.choices.setdefault(choice.label, choice)

    def _ensure(self, label: str) -> tuple[Organism, str]:
        choice = self.choices.get(label)
        if choice is None:
            raise OrganismError(f"{label!r} is not one of this arena's organisms")
        if self._organism is None or self._base_spec != choice.base_spec:
            self._organism = None  # let the old base go before the new one loads
            self._adapters.clear()
            log.info("loading %s on %s", choice.label, choice.base_label)
            self._organism = load_organism(str(choice.folder), device=self.device)
            self._base_spec = choice.base_spec
            self._adapters[label] = "default"
        elif label not in self._adapters:
            name = f"organism_{len(self._adapters)}"
            self._organism.model.load_adapter(str(choice.folder), adapter_name=name)
            self._organism.model.eval()
            self._adapters[label] = name
        return self._organism, self._adapters[label]

    def preload(self, label: str) -> None:
        with self.lock:
            self._ensure(label)

    @contextlib.contextmanager
    def use(
        self, label: str, scale: float
    ) -> Iterator[tuple[Organism, PreTrainedTokenizerBase, str]]:
        """The organism's model with LABEL's adapter at SCALE, and that adapter's name."""
        with self.lock:
            organism, adapter = self._ensure(label)
            with organism.scaled(scale):
                yield organism, organism.tokenizer, adapter
