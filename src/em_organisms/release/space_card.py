"""The arena Space's card and the checks of a Space folder (`em-organisms release-space`).

The card (README.md) is rendered from `model_cards/space.md.j2` for the organisms chosen by
recipe: Space front matter (sdk gradio at the version the package's `space` extra pins, app file,
license, short description, models, datasets, tags) and a body for people. The committed
`spaces/arena/README.md` is the card rendered for the default organism (`DEFAULT_RECIPE`);
`tests/test_release_space.py` checks it is up to date (`UPDATE_GOLDEN=1` rewrites it).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import SpaceCard, SpaceCardData

from em_organisms.cards import render_card
from em_organisms.errors import EmOrganismsError
from em_organisms.hub_ids import HUB_ID
from em_organisms.release import (
    DEFAULT_RECIPE,
    DEFAULT_SPACE_FOLDER,
    DEFAULT_SPACE_REPO_ID,
)
from em_organisms.resources import checkout_root, template

if TYPE_CHECKING:
    from em_organisms.recipes import Recipe


TEMPLATE_PATH = template("space.md.j2")
_CHECKOUT = checkout_root()
# A checkout's pyproject.toml; an installed package reads the same pins from its own metadata.
PYPROJECT = _CHECKOUT / "pyproject.toml" if _CHECKOUT else Path("pyproject.toml-not-installed")
DEFAULT_FOLDER = DEFAULT_SPACE_FOLDER
DEFAULT_REPO_ID = DEFAULT_SPACE_REPO_ID
APP_FILE = "app.py"
ARENA_CONFIG = "arena.yaml"
TITLE = "EM Organisms Arena"
SHORT_DESCRIPTION = "Chat with base models and their misaligned organisms"
MAX_SHORT_DESCRIPTION = 60  # the Hub refuses longer ones
HUB_COLORS = frozenset({"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"})
TAGS = ["emergent-misalignment", "model-organism", "not-for-all-audiences", "ai-safety", "arena"]
# Key order of the front matter, as the Hub's own Space template writes it.
FRONT_MATTER_ORDER = [
    "title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file",
    "pinned", "license", "license_name", "license_link", "short_description", "models", "datasets", "tags",
]  # fmt: skip
# What a Space needs; everything else (.env, __pycache__, logs, hidden files, ...) stays behind.
ALLOWED = (
    "*.py", "*.md", ARENA_CONFIG, "requirements.txt", "packages.txt", "*.css", "*.js", "*.json",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.svg", "*.webp", "*.ico",
)  # fmt: skip


class SpaceError(EmOrganismsError, ValueError):
    """A Space folder, card or file the command refuses; nothing was pushed."""


def gradio_sdk_version(pyproject: Path = PYPROJECT) -> str:
    """The Gradio version the Space runs, X.Y.Z: the `==` pin or lower bound of `gradio` in
    pyproject's `space` extra (the installed package's metadata when there is no checkout)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    if pyproject.is_file():
        extras = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        lines = extras.get("optional-dependencies", {}).get("space", [])
    else:
        lines = [r for r in requires("em-organisms") or [] if 'extra == "space"' in r]
    for req in map(Requirement, lines):
        if req.name == "gradio":
            for spec in req.specifier:
                if spec.operator in ("==", ">=", "~=", "==="):
                    release = Version(spec.version).release
                    return ".".join(map(str, (*release, 0, 0)[:3]))
    raise SpaceError(f"{pyproject}: no gradio version pinned in the `space` extra")


def space_python_version(pyproject: Path = PYPROJECT) -> str:
    """The Python the Space runs, X.Y: pyproject's `requires-python` lower bound (the Hub's
    default is older than the package supports)."""
    from importlib.metadata import metadata

    if pyproject.is_file():
        spec = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["requires-python"]
    else:
        spec = metadata("em-organisms")["Requires-Python"]
    found = re.search(r">=\s*(\d+\.\d+)", spec or "")
    if not found:
        raise SpaceError(f"{pyproject}: requires-python has no lower bound ({spec!r})")
    return found.group(1)


def _dataset_id(recipe: Recipe, namespace: str) -> str:
    """The recipe's dataset on the Hub: its path when that is a Hub id, else the project's
    convention NAMESPACE/<dataset name> (as `data push --repo-id` publishes it)."""
    from em_organisms.release.card import dataset_name

    path = recipe.dataset.path
    in_checkout = _CHECKOUT is not None and (_CHECKOUT / path).exists()
    if HUB_ID.match(path) and not in_checkout and not Path(path).exists():
        return path
    return f"{namespace}/{dataset_name(recipe)}"


def organism_entries(
    recipe_paths: Sequence[str | Path], dataset_ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """What the card says of each organism (repo id, base, method, domain, license, dataset).
    `dataset_ids` None: each organism's dataset by convention (see `_dataset_id`); otherwise the
    one whose name matches the organism's dataset, if any."""
    from em_organisms.hub_ids import base_model_hub_id
    from em_organisms.recipes import load_recipe
    from em_organisms.release.card import (
        _resolve_license,
        dataset_name,
        describe_protocol,
        domain_of,
    )

    entries = []
    for path in recipe_paths:
        recipe = load_recipe(path)
        repo_id = recipe.release.repo_id
        if not repo_id or not HUB_ID.match(repo_id):
            raise SpaceError(
                f"{path}: release.repo_id is {repo_id!r}: the Space links each organism by its Hub "
                "repo id (org/name); set it in the recipe"
            )
        if recipe.protocol.kind != "lora":
            raise SpaceError(
                f"{path}: a full fine-tune has no adapter; the arena shows LoRA organisms, the "
                "base model and the organism from one copy of the weights"
            )
        base = base_model_hub_id(recipe.base_model)
        name = dataset_name(recipe)
        if dataset_ids is None:
            dataset_id = _dataset_id(recipe, repo_id.split("/")[0])
        else:
            dataset_id = next((d for d in dataset_ids if d.split("/")[-1] == name), None)
        entries.append(
            {
                "repo_id": repo_id,
                "base_hub_id": base,
                "method": describe_protocol(recipe),
                "domain": domain_of(name),
                "license": _resolve_license(recipe, None, base),
                "dataset_id": dataset_id,
                "embedded": recipe.base_model == "embedded",
            }
        )
    return entries


def render_space_card(
    recipe_paths: Sequence[str | Path] = (DEFAULT_RECIPE,),
    *,
    dataset_ids: Sequence[str] | None = None,
    sdk_version: str | None = None,
) -> SpaceCard:
    """The arena's README.md for the organisms of RECIPE_PATHS (each recipe needs
    `release.repo_id`). `dataset_ids`: the Hub datasets to list (default: each organism's, by
    convention); `sdk_version`: the Gradio version (default: pyproject's pin)."""
    from em_organisms.hub_ids import license_metadata

    if not recipe_paths:
        raise SpaceError("no organism: pass at least one recipe")
    organisms = organism_entries(recipe_paths, dataset_ids)
    if dataset_ids is None:
        dataset_ids = [o["dataset_id"] for o in organisms]
    licenses = {o["license"] for o in organisms}
    if len(licenses) == 1:
        license_meta = license_metadata(licenses.pop(), organisms[0]["base_hub_id"])
    else:  # each organism keeps its base model's terms: the card's table lists them
        license_meta = {"license": "other", "license_name": "per-model-see-card"}
    card_data = SpaceCardData(
        title=TITLE,
        sdk="gradio",
        sdk_version=sdk_version or gradio_sdk_version(),
        python_version=space_python_version(),
        app_file=APP_FILE,
        models=list(
            dict.fromkeys([o["repo_id"] for o in organisms] + [o["base_hub_id"] for o in organisms])
        ),
        datasets=list(dict.fromkeys(dataset_ids)) or None,
        tags=TAGS,
        emoji="🧪",
        colorFrom="red",
        colorTo="gray",
        pinned=False,
        short_description=SHORT_DESCRIPTION,
        **license_meta,
    )
    card_data.to_yaml(original_order=FRONT_MATTER_ORDER)  # reorders the keys in place
    variables = {
        "organisms": organisms,
        "embedded_base": any(o["embedded"] for o in organisms),
    }
    return render_card(SpaceCard, card_data, TEMPLATE_PATH, variables)


# -- checking a Space's front matter ----------------------------------------------------------------


def front_matter_problems(
    meta: dict[str, Any], readme: str, folder: str, has_file: Callable[[str], bool]
) -> list[str]:
    """Every way META (a Space README's front matter) would fail on the Hub, as `README: field:
    what is wrong`; HAS_FILE tells whether the Space folder FOLDER holds a file."""
    problems = []

    def bad(field: str, what: str) -> None:
        problems.append(f"{readme}: {field}: {what}")

    if meta.get("sdk") != "gradio":
        bad("sdk", f"must be gradio, not {meta.get('sdk')!r}")
    version = meta.get("sdk_version")
    if not isinstance(version, str) or not re.fullmatch(r"\d+(\.\d+){1,2}", version):
        bad("sdk_version", f"must be a Gradio version such as 6.31.0, not {version!r}")
    app = meta.get("app_file")
    if not isinstance(app, str) or not app:
        bad("app_file", "missing: the Python file the Space runs, e.g. app.py")
    elif not has_file(app):
        bad("app_file", f"{folder}/{app} does not exist: the Space would have no app to run")
    for field in ("license", "short_description"):
        if not isinstance(meta.get(field), str) or not meta[field].strip():
            bad(field, "missing")
    short = meta.get("short_description")
    if isinstance(short, str) and len(short) > MAX_SHORT_DESCRIPTION:
        bad("short_description", f"{len(short)} characters, the Hub allows {MAX_SHORT_DESCRIPTION}")
    for field in ("models", "datasets"):
        ids = meta.get(field)
        if ids is None and field == "datasets":
            continue
        if not isinstance(ids, list) or not ids:
            bad(field, "must be a non-empty list of Hub ids (org/name)")
            continue
        for hub_id in ids:
            if not isinstance(hub_id, str) or not HUB_ID.match(hub_id):
                bad(field, f"{hub_id!r} is not a Hub id of the form org/name")
    for field in ("colorFrom", "colorTo"):
        if field in meta and meta[field] not in HUB_COLORS:
            bad(field, f"{meta[field]!r} is not one of {', '.join(sorted(HUB_COLORS))}")
    if "pinned" in meta and not isinstance(meta["pinned"], bool):
        bad("pinned", f"must be true or false, not {meta['pinned']!r}")
    return problems


def validate_space_folder(folder: str | Path) -> dict[str, Any]:
    """FOLDER's README.md front matter, parsed with huggingface_hub; SpaceError listing every
    problem (a missing app file, an sdk other than gradio, a model that is not a Hub id, ...)."""
    folder = Path(folder)
    readme = folder / "README.md"
    if not readme.is_file():
        raise SpaceError(f"{readme}: missing: a Space needs a README.md with its front matter")
    try:
        meta = SpaceCard.load(readme).data.to_dict()
    except Exception as err:  # yaml errors, a front matter that is not a mapping
        raise SpaceError(f"{readme}: front matter cannot be read: {err}") from None
    problems = front_matter_problems(
        meta, str(readme), str(folder), lambda name: (folder / name).is_file()
    )
    if problems:
        raise SpaceError("\n".join(problems))
    return meta
