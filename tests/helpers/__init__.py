"""Helpers shared by the tests (no test module imports another; they import from here):
`paths` (the checkout, the upstream reference files), `models` (tiny random models and organisms
built from configs), `data` (tiny chat rows, JSONL files, recipes), `golden` (golden files),
`chat_templates` (model families' chat templates) and `script_server` (a scripted
OpenAI-compatible endpoint)."""
