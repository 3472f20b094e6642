"""Training: protocols, data preparation, the SFT runner and its callbacks."""
