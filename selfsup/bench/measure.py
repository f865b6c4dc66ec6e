"""Timing and peak-memory helpers for benchmarks (CPU: resident set size of this process)."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_steps(step: Callable[[int], None], warmup: int, repeats: int) -> dict[str, float]:
    """Median and min wall time of ``step(i)`` over ``repeats`` calls after ``warmup`` calls, and the
    peak memory the steps added on top of what was resident before them."""
    for i in range(warmup):
        step(i)
    base = current_rss_mb()
    times = []
    for i in range(warmup, warmup + repeats):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    return {
        "ms_median": 1000 * statistics.median(times),
        "ms_min": 1000 * min(times),
        "peak_rss_mb": peak_rss_mb(),
        "step_peak_over_base_mb": max(0.0, peak_rss_mb() - base),
    }


def run_isolated(module: str, args: list[str]) -> dict:
    """Run ``python -m module args`` and parse the JSON it prints last (one measurement per process,
    so peak memory is not shared between the implementations being compared)."""
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
