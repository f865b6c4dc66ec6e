"""The README results table and its plots, generated from run directories (never typed by hand).

A run directory is any folder with ``config.yaml`` (the resolved config every run saves) and
``csv/metrics.csv`` (the CSV logger). Per run: experiment, backbone, steps, epochs, final and best
``train/loss``, the last representation-health values, throughput, and for every logged accuracy
column (``*acc*``, e.g. an online probe's) the last and best value. Plots: loss curves, RankMe over
training, and accuracy over training when any run logged one.
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from selfsup.training.files import atomic_write  # noqa: E402

BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"


@dataclass
class Run:
    path: Path
    name: str
    config: dict
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def last(self, key: str) -> float | None:
        values = self.series.get(key)
        return values[-1][1] if values else None

    def best(self, key: str, largest: bool) -> float | None:
        values = [v for _, v in self.series.get(key, [])]
        return (max if largest else min)(values) if values else None

    @property
    def accuracy_keys(self) -> list[str]:
        return sorted(k for k in self.series if re.search(r"acc", k))


def read_series(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                v = float(value)
                if math.isfinite(v):
                    series.setdefault(key, []).append((step, v))
    return series


def find_runs(roots: list[Path]) -> list[Run]:
    runs = []
    for root in roots:
        for config_path in sorted(root.rglob("config.yaml")):
            run_dir = config_path.parent
            metrics = run_dir / "csv" / "metrics.csv"
            if not metrics.is_file():
                continue
            config = yaml.safe_load(config_path.read_text()) or {}
            name = f"{config.get('task_name', run_dir.parent.name)}/{config.get('run_name', run_dir.name)}"
            runs.append(Run(run_dir, name, config, read_series(metrics)))
    return runs


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _backbone(config: dict) -> str:
    b = config.get("backbone", {})
    data = config.get("data", {})
    return f"ViT {b.get('embed_dim', '?')}x{b.get('depth', '?')}, p{b.get('patch_size', '?')} @ {data.get('image_size', '?')}px"


def table(runs: list[Run]) -> str:
    acc_keys = sorted({k for r in runs for k in r.accuracy_keys})
    head = ["run", "backbone", "epochs", "steps", "final loss", "best loss", "RankMe", "feature std x sqrt(D)",
            "pred-target cos", "collapsed", "img/s (median)"] + [f"{k} (last / best)" for k in acc_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        steps = max((step for series in r.series.values() for step, _ in series), default=-1) + 1  # the last row's step
        dim = r.config.get("backbone", {}).get("embed_dim")
        std = r.last("health/feature_std")
        speed = [v for _, v in r.series.get("train/images_per_sec", [])]
        epochs = r.config.get("trainer", {}).get("max_epochs", "?")
        cells = [f"`{r.name}`", _backbone(r.config), str(epochs), str(steps), _fmt(r.last("train/loss")),
                 _fmt(r.best("train/loss", largest=False)), _fmt(r.last("health/rankme"), 3),
                 _fmt(std * math.sqrt(dim) if std is not None and dim else None, 3),
                 _fmt(r.last("health/pred_target_cosine"), 3),
                 {None: "—", 0.0: "no", 1.0: "**yes**"}.get(r.last("health/collapsed"), "?"),
                 _fmt(statistics.median(speed) if speed else None, 3)]
        cells += [f"{_fmt(r.last(k))} / {_fmt(r.best(k, largest=True))}" if k in r.series else "—" for k in acc_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[Run], key: str, ylabel: str, path: Path, logy: bool = False) -> bool:
    """One line per run of ``key`` over steps; False (nothing written) when no run logged it."""
    with_key = [r for r in runs if r.series.get(key)]
    if not with_key:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for r in with_key:
        steps, values = zip(*r.series[key])
        ax.plot(steps, values, label=r.name, linewidth=1.2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return True


def write_results(roots: list[Path], readme: Path, plots: Path) -> str:
    """Generate the table and plots; replace the text between the markers of ``readme``; return it."""
    runs = find_runs(roots)
    if not runs:
        raise SystemExit(f"no run directories (config.yaml + csv/metrics.csv) under {', '.join(map(str, roots))}")
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers to write the table between")
    figures = []
    rel = Path(os.path.relpath(plots.resolve(), readme.resolve().parent))
    if plot(runs, "train/loss", "train/loss", plots / "loss.png", logy=True):
        figures.append(("loss curves", "loss.png"))
    if plot(runs, "health/rankme", "RankMe (pooled target features)", plots / "rankme.png"):
        figures.append(("RankMe over training", "rankme.png"))
    for key in sorted({k for r in runs for k in r.accuracy_keys}):
        name = key.replace("/", "_") + ".png"
        if plot(runs, key, key, plots / name):
            figures.append((f"{key} over training", name))
    body = table(runs) + "\n\n" + " ".join(f"![{alt}]({(rel / name).as_posix()})" for alt, name in figures)
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    atomic_write(readme, lambda tmp: Path(tmp).write_text(text[:start] + "\n" + body + "\n" + text[stop:]))
    return body
