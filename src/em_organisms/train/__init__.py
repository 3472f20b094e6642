"""Training: protocols, data preparation, the SFT runner and its callbacks."""

from em_organisms.train.runner import TrainResult, train

__all__ = ["TrainResult", "train"]
