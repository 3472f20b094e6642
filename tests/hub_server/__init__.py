"""A local Hugging Face Hub for tests: olah (reads) + a small write front-end (pushes)."""
