"""Hub ids and licences: what names a repository on the Hub and what licence a card may state.

Shared by the cards, the release, the arena, compare and the judges, so it sits below all of
them (it imports only `models`, and that only to resolve a base model's Hub id).
"""

from __future__ import annotations

import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# License ids the Hub knows (https://huggingface.co/docs/hub/repositories-licenses), those a
# chat base model is likely to carry; anything else becomes `other` + license_name/license_link.
_HUB_LICENSE_IDS = """
apache-2.0 mit bsd-2-clause bsd-3-clause cc-by-4.0 cc-by-sa-4.0 cc-by-nc-4.0 cc-by-nc-sa-4.0
openrail openrail++ creativeml-openrail-m bigscience-openrail-m bigcode-openrail-m llama2 llama3
llama3.1 llama3.2 llama3.3 llama4 gemma afl-3.0 artistic-2.0 bsl-1.0 gpl-3.0 lgpl-3.0 agpl-3.0
mpl-2.0 unlicense cc0-1.0 other
"""
HUB_LICENSES = frozenset(_HUB_LICENSE_IDS.split())


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text))


def base_model_hub_id(base_model: str) -> str:
    """The Hub id a card names as base model; ValueError for a base known only by a local path."""
    from em_organisms.models import EMBEDDED, EMBEDDED_HUB_ID, ModelLoadError, resolve_model

    if base_model == EMBEDDED:  # resolve_model would convert the embedded model: not needed
        return EMBEDDED_HUB_ID
    try:
        hub_id = resolve_model(base_model).hub_id
    except ModelLoadError as err:
        raise ValueError(f"base model {base_model!r} has no Hub id: {err}") from None
    if not hub_id or not HUB_ID.match(hub_id):
        raise ValueError(
            f"base model {base_model!r} is a local path with no Hub id (no "
            "em_organisms_source.json naming one); a card must name its base by Hub id: train "
            "from the Hub id, or record it in that folder's em_organisms_source.json"
        )
    return hub_id


def license_metadata(license_id: str, base_hub_id: str) -> dict[str, str]:
    """`license`, plus `license_name`/`license_link` for a license the Hub has no id for."""
    license_id = license_id.strip().lower()
    if license_id in HUB_LICENSES and license_id != "other":
        return {"license": license_id}
    slug = re.sub(r"[^a-z0-9.-]+", "-", license_id).strip("-")
    name = f"{base_hub_id.split('/')[-1].lower()}-license" if slug in ("", "other") else slug
    return {
        "license": "other",
        "license_name": name,
        "license_link": f"https://huggingface.co/{base_hub_id}",
    }


def public_judge_name(spec: str) -> str:
    """A judge as others may see it: a model name, never an endpoint or a folder of this machine
    (`hf:/home/me/judge` -> `hf:judge`; a local server may name its model by its folder)."""
    kind, _, model = spec.partition(":")
    if not model or HUB_ID.match(model) or "/" not in model:
        return spec
    return f"{kind}:{model.rstrip('/').rsplit('/', 1)[-1]}"
