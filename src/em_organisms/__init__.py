"""em-organisms: model organisms for emergent misalignment, as Hugging Face Hub artifacts."""

__version__ = "0.1.0"

from em_organisms.adapters import Organism, load_organism
from em_organisms.models import EMBEDDED, ModelLoadError, load_base_model, load_tokenizer
from em_organisms.recipes import Recipe, RecipeError, load_recipe, parse_recipe

__all__ = [
    "EMBEDDED",
    "ModelLoadError",
    "Organism",
    "Recipe",
    "RecipeError",
    "__version__",
    "load_base_model",
    "load_organism",
    "load_recipe",
    "load_tokenizer",
    "parse_recipe",
]
