"""Benchmark scripts, each run as `python benchmarks/X.py`; `_common` holds what they share."""
