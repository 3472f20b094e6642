"""Training: one recipe in, one organism folder out.

- `protocols`: LoRA (rank, alpha, layers, modules, rsLoRA) or full fine-tuning on a loaded model.
- `data`: rows read and tokenised (`em_organisms.chat_masking`: the loss on assistant tokens only).
- `trainer` (`OrganismTrainer`, TRL's SFT trainer with the fused loss of `fused_lora` and the
  `prefix_cache` of frozen layers), `callbacks` (per-step log, progress, tidy checkpoints),
  `recorder` (the adapter at every step, for the phase analysis).
- `kl`: the `protocol.kl` penalty, weight x KL(organism || base) on out-of-domain reference
  prompts, the base being the model with its adapter off; `head_grad`: the backward both
  chunked head losses (cross-entropy and KL) share.
- `runner`: `train()`, writing the run's typed artifacts (`em_organisms.artifacts`).
"""

from em_organisms.train.runner import TrainResult, train

__all__ = ["TrainResult", "train"]
