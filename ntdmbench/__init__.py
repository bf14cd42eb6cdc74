"""ntdm-bench: a benchmark and evaluation harness for robust 3D-aware vision."""

__version__ = "0.1.0"
