"""Analyses of trained organisms: where the adapter turns during training, and when behaviour
follows (`em-organisms phase`).

- `trajectory`: an organism's adapter over training (its recording, its checkpoints, or its
  released `step-N` branches).
- `rotation`: local cosine of the B (and A) vectors, turns, the magnitude cut, the comp score.
- `sweep`: sample and judge checkpoints x adapter scales; `phase`: both, with the plots of `plots`;
  `commands`: the `phase` subcommand.
"""
