"""The benchmark commands the README quotes run and print their comparison (tiny sizes here)."""

from __future__ import annotations

import re

from tests.helpers import run_command


def test_pretrain_step_benchmark_prints_ratios(tmp_path):
    proc = run_command(
        "python tools/benchmark.py pretrain-step", tmp_path,
        ["--img", "96", "--patch", "8", "--batch", "2", "--pred-depth", "1", "--warmup", "1", "--repeats", "1", "--rounds", "2"],
    )
    assert "medians over 2 alternating processes" in proc.stdout
    assert len(re.search(r"per round naive/ours: ([^;]*)", proc.stdout).group(1).split(", ")) == 2
    for row in ("naive (explicit softmax, loop EMA)", "ours, whole last predictor block", "ours (SDPA, foreach EMA, target rows)"):
        assert row in proc.stdout
    assert float(re.search(r"naive/ours-whole-last-block: ([\d.]+)x", proc.stdout).group(1)) > 0
    speedup = float(re.search(r"speed-up naive/ours: ([\d.]+)x", proc.stdout).group(1))
    memory = float(re.search(r"memory ours/naive: ([\d.]+)x", proc.stdout).group(1))
    assert speedup > 0 and memory > 0
