#!/usr/bin/env python
"""Measured comparisons, each implementation in its own process, ratios printed from the same run.

    python tools/benchmark.py pretrain-step          # I-JEPA step: ours vs a plain official-style step
    python tools/benchmark.py probe-heads            # probe-head training steps on cached ViT-B tokens (--rounds R)
    python tools/benchmark.py dmt-step               # DMT-JEPA step / I-JEPA step; target head: official all-patches / ours
    python tools/benchmark.py det-step               # Mask R-CNN step (det_vitdet): ours vs stock torchvision parts

Options after the name are passed to the measurement (e.g. ``--batch 16 --repeats 12``);
``pretrain-step`` and ``dmt-step`` also take ``--rounds N`` (default 3): each implementation runs in N
processes, alternating with the others, and the medians over them are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfsup.bench.measure import run_alternating, run_isolated  # noqa: E402


def rounds_option(extra: list[str], default: int = 3) -> tuple[int, list[str]]:
    """``--rounds N`` (each implementation's process is run N times, alternating) and the other options."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--rounds", type=int, default=default)
    a, rest = p.parse_known_args(extra)
    return a.rounds, rest


def pretrain_step(extra: list[str]) -> None:
    rounds, rest = rounds_option(extra)
    load_before = os.getloadavg()[0]
    rows = run_alternating("selfsup.bench.pretrain_step", ("naive", "ours_all_rows", "ours"), rest, rounds)
    ours, naive, all_rows = rows["ours"], rows["naive"], rows["ours_all_rows"]
    print(f"I-JEPA training step, ViT-{ours['size']} at {ours['img']}px, batch {ours['batch']}, CPU fp32; "
          f"medians over {rounds} alternating processes per implementation; "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'implementation':<44}{'ms/step (median)':>18}{'peak RSS MB':>14}")
    print(f"{'naive (explicit softmax, loop EMA)':<44}{naive['ms_median']:>18.1f}{naive['peak_rss_mb']:>14.0f}")
    print(f"{'ours, whole last predictor block':<44}{all_rows['ms_median']:>18.1f}{all_rows['peak_rss_mb']:>14.0f}")
    print(f"{'ours (SDPA, foreach EMA, target rows)':<44}{ours['ms_median']:>18.1f}{ours['peak_rss_mb']:>14.0f}")
    print(f"speed-up naive/ours: {naive['ms_median'] / ours['ms_median']:.2f}x; "
          f"memory ours/naive: {ours['peak_rss_mb'] / naive['peak_rss_mb']:.2f}x; "
          f"per round naive/ours: {', '.join(f'{n / o:.2f}x' for n, o in zip(naive['ms_rounds'], ours['ms_rounds']))}; "
          f"naive/ours-whole-last-block: {naive['ms_median'] / all_rows['ms_median']:.2f}x")


PROBES = "linear,ep,ep_official,aim,vjepa,cait,dinov2_block"
PROBE_OVERRIDES = {"ep_official": ["probe=ep", "probe.pool_then_project=false"]}


def probe_accuracy(probe: str, checkpoint: str, epochs: int, output_dir: Path, overrides: list[str]) -> float:
    """Best val top-1 of ``experiment=probe_ep probe=<probe>`` on the embedded data, cached (un-augmented) features,
    a whole schedule of ``epochs`` (``schedule.epochs``; the trainer's ``max_epochs`` follows it)."""
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "experiment=probe_ep", *PROBE_OVERRIDES.get(probe, [f"probe={probe}"]), f"backbone.checkpoint={checkpoint}",
           "data.train_transform.augment=false", f"schedule.epochs={epochs}", "callbacks=probe", "logger=none",
           "trainer.enable_progress_bar=false", f"run_name={probe}", f"paths.output_dir={output_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the accuracy run of {probe} failed:\n{' '.join(cmd)}\n{proc.stderr[-3000:]}")
    results = json.loads((output_dir / "probe_ep" / probe / "probe_results.json").read_text())
    return results["best"]["probe"]["acc1"]


def probe_heads(extra: list[str]) -> None:
    p = argparse.ArgumentParser(prog="benchmark.py probe-heads")
    p.add_argument("--probes", default=PROBES)
    p.add_argument("--checkpoint", default=None, help="a pretrained backbone: adds embedded-dataset accuracy")
    p.add_argument("--epochs", type=int, default=90, help="probe epochs (the whole schedule) of the accuracy runs")
    p.add_argument("--output-dir", default="outputs/benchmark_probe_heads")
    p.add_argument("--override", action="append", default=[], help="a config override of the accuracy runs (repeatable)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of one process per probe, interleaved; ms/step = median over rounds")
    a, rest = p.parse_known_args(extra)
    probes = a.probes.split(",")
    load_before = os.getloadavg()[0]
    rows = run_alternating("selfsup.bench.probe_heads", tuple(probes), rest, a.rounds, flag="--probe")
    load = f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    acc = {probe: probe_accuracy(probe, a.checkpoint, a.epochs, Path(a.output_dir), a.override) for probe in probes} if a.checkpoint else {}
    first = next(iter(rows.values()))
    ref = rows.get("vjepa", first)["ms_median"]
    print(f"Probe-head training step on cached tokens: batch {first['batch']}, {first['tokens']} tokens x {first['dim']}, "
          f"{first['classes']} classes, LARS, CPU fp32, each probe in its own process, {a.rounds} round(s), {load}")
    header = f"{'probe':<14}{'params':>12}{'MMACs/img':>11}{'ms/step':>10}{'img/s':>9}{'vs vjepa':>10}"
    print(header + (f"{'top-1 (embedded)':>18}" if acc else ""))
    for probe, r in rows.items():
        line = (f"{probe:<14}{r['params']:>12,}{r['macs_per_image'] / 1e6:>11.1f}{r['ms_median']:>10.1f}"
                f"{r['batch'] * 1000 / r['ms_median']:>9.0f}{ref / r['ms_median']:>9.1f}x")
        print(line + (f"{acc[probe]:>18.2f}" if acc else ""))
    if acc:
        print(f"top-1: best epoch of {a.epochs} (experiment=probe_ep: the efficient-probing protocol at CPU scale, "
              f"un-augmented cached features) with {a.checkpoint}")


def dmt_step(extra: list[str]) -> None:
    impls = ("ijepa", "dmt", "head-ours", "head-all", "head-official")
    rounds, rest = rounds_option(extra)
    load_before = os.getloadavg()[0]
    rows = run_alternating("selfsup.bench.dmt_step", impls, rest, rounds)
    first = rows["dmt"]
    print(f"DMT-JEPA cost, ViT-{first['size']} at {first['img']}px ({first['tokens']} patches), batch {first['batch']}, "
          f"CPU fp32; {first['target_patches_per_image']:.1f} distinct target patches per image; "
          f"medians over {rounds} alternating processes per measurement; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'measurement':<58}{'ms (median)':>13}{'peak RSS MB':>14}")
    labels = {
        "ijepa": "I-JEPA training step",
        "dmt": "DMT-JEPA training step",
        "head-ours": "target head, ours (target patches only)",
        "head-all": "target head, same modules at every patch (official)",
        "head-official": "target head, released code re-expressed (every patch)",
    }
    for impl in impls:
        print(f"{labels[impl]:<58}{rows[impl]['ms_median']:>13.1f}{rows[impl]['peak_rss_mb']:>14.0f}")
    ms = {impl: rows[impl]["ms_median"] for impl in impls}
    print(f"DMT-JEPA step / I-JEPA step: {ms['dmt'] / ms['ijepa']:.3f}x (goal <= 1.15x)")
    print(f"target head, official all-patches / ours: {ms['head-all'] / ms['head-ours']:.2f}x (same modules), "
          f"{ms['head-official'] / ms['head-ours']:.2f}x (released code re-expressed)")


def det_step(extra: list[str]) -> None:
    rows = {impl: run_isolated("selfsup.bench.det_step", ["--impl", impl, *extra]) for impl in ("torchvision", "ours")}
    ours, stock = rows["ours"], rows["torchvision"]
    print(f"Mask R-CNN (experiment=det_vitdet) at {ours['img']}px, batch {ours['batch']}, CPU fp32")
    print(f"{'implementation':<52}{'train ms/step':>15}{'eval ms/batch':>15}{'peak RSS MB':>13}")
    for name, row in (("torchvision (legacy RoIAlign, resize+pad, paste)", stock), ("ours (aligned RoIAlign, square pad, aligned paste)", ours)):
        print(f"{name:<52}{row['train_ms']:>15.1f}{row['eval_ms']:>15.1f}{row['peak_rss_mb']:>13.0f}")
    print(f"time ours/torchvision: train {ours['train_ms'] / stock['train_ms']:.2f}x, eval {ours['eval_ms'] / stock['eval_ms']:.2f}x")


BENCHMARKS = {"pretrain-step": pretrain_step, "dmt-step": dmt_step, "det-step": det_step, "probe-heads": probe_heads}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(f"usage: python tools/benchmark.py {{{'|'.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        sys.exit(2)
    BENCHMARKS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
