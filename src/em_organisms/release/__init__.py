"""Releasing organisms on the Hugging Face Hub: model cards and what goes with them."""
