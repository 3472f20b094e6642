"""The arena: a Gradio app that shows a base model and its organism side by side, with a judge.
("Space" is where it runs on the Hub; `release.space_card`, `space_stage` and `space_push` publish it.)

- `config`: the strict `arena.yaml`; `organisms`: the organisms offered, one base in memory.
- `streaming`: both answers decoded in one batch, token by token; `direction_column`: the
  optional third column (a misalignment direction steered into the base or ablated from the
  organism, on its own row of that batch, with `directions.hooks`' row mask); `judging`: the arena's judge and
  its calibration status; `arena`: the page (`build_arena`); `app`: launching it;
  `commands`: `em-organisms space` and the Space's `app.py` entry.
"""

from em_organisms.space.commands import main

__all__ = ["main"]
