"""The arena: a Gradio app that shows a base model and its organism side by side, with a judge.

`spaces/arena/app.py` only calls `main`; `em-organisms space` runs the same arena.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "ArenaConfig": "em_organisms.space.config",
    "load_config": "em_organisms.space.config",
    "build_arena": "em_organisms.space.commands",
    "main": "em_organisms.space.commands",
    "build_app": "em_organisms.space.app",
    "Arena": "em_organisms.space.arena",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
