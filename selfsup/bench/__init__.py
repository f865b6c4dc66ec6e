"""Measured comparisons run by ``tools/benchmark.py``: each measurement in its own process."""
