"""Rendering the project's Hub cards (`model_cards/*.md.j2`) with huggingface_hub's templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import jinja2
from huggingface_hub import RepoCard
from jinja2 import meta as jinja_meta

CardT = TypeVar("CardT", bound=RepoCard)


def render_card(
    card_class: type[CardT], card_data: Any, template_path: Path, variables: dict[str, Any]
) -> CardT:
    """`card_class.from_template`, refusing a template that names a variable nobody passes:
    from_template renders leniently, so a typo would silently render as ""."""
    template = template_path.read_text(encoding="utf-8")
    names = jinja_meta.find_undeclared_variables(jinja2.Environment().parse(template))
    unknown = names - set(variables) - set(card_data.to_dict()) - {"card_data"}
    if unknown:
        raise RuntimeError(f"{template_path}: unknown template variables {sorted(unknown)}")
    return card_class.from_template(card_data, template_str=template, **variables)
