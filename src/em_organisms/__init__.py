"""em-organisms."""

__version__ = "0.1.0"
