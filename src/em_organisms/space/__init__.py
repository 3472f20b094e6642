"""The arena: a Gradio app that shows a base model and its organism side by side, with a judge.

`spaces/arena/app.py` only calls `main`; `em-organisms space` runs the same arena.
"""

from em_organisms.space.commands import main

__all__ = ["main"]
