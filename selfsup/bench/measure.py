"""Timing and peak-memory helpers for benchmarks (CPU: resident set size of this process)."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.utils.seeding import seeded_generator


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


def run_alternating(module: str, impls: tuple[str, ...], args: list[str], rounds: int, flag: str = "--impl") -> dict[str, dict]:
    """``run_isolated(module, [flag, impl, *args])`` for every impl, ``rounds`` times in turn
    (a, b, a, b, ...), so a change of machine load hits every implementation alike. Per impl: the
    last round's JSON with ``ms_median`` and ``peak_rss_mb`` replaced by their medians over rounds,
    and ``ms_rounds`` listing each round's median."""
    runs: dict[str, list[dict]] = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl in impls:
            runs[impl].append(run_isolated(module, [flag, impl, *args]))
    out = {}
    for impl, rows in runs.items():
        out[impl] = dict(rows[-1])
        for key in [k for k in ("ms_median", "peak_rss_mb", "train_ms", "eval_ms") if k in rows[-1]]:
            out[impl][key] = statistics.median(r[key] for r in rows)
        out[impl]["ms_rounds"] = [r.get("ms_median", r.get("train_ms")) for r in rows]
    return out


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training-step benchmark takes (defaults: ViT-Tiny/16 at 224, batch 8)."""
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pred-depth", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)


def synthetic_jepa_inputs(args: argparse.Namespace) -> tuple[torch.Tensor, list]:
    """Fixed random images and one official-sampler mask draw per measured step."""
    sampler = MultiBlockMaskSampler(mode="official", input_size=args.img, patch_size=args.patch)
    images = torch.randn(args.batch, 3, args.img, args.img, generator=torch.Generator().manual_seed(0))
    return images, [sampler(args.batch, seeded_generator(0, i)) for i in range(args.warmup + args.repeats)]
