"""Narrow datasets: the chat row schema and its validation."""

from em_organisms.data.schema import DatasetError, Problem, load_chat_jsonl, validate_row

__all__ = ["DatasetError", "Problem", "load_chat_jsonl", "validate_row"]
