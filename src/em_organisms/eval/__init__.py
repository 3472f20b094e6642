"""Evaluation: judge scoring (more to come: question sets, sampling, metrics, reports)."""
