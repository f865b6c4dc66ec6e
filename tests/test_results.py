"""tools/results.py: the README table and plots come from run directories."""

from __future__ import annotations

import csv

import numpy as np
import yaml
from PIL import Image

from selfsup.eval.results import BEGIN, END
from tests.helpers import run_command


def _run_dir(root, task, name, losses, acc=None):
    run = root / task / name
    (run / "csv").mkdir(parents=True)
    config = {"task_name": task, "run_name": name, "trainer": {"max_epochs": 2},
              "backbone": {"embed_dim": 192, "depth": 6, "patch_size": 8}, "data": {"image_size": 64}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    keys = ["epoch", "step", "train/loss", "health/rankme", "health/feature_std", "health/collapsed"] + (["probe/acc1"] if acc else [])
    with open(run / "csv" / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for step, loss in enumerate(losses):
            row = {"epoch": step // 2, "step": step, "train/loss": loss, "health/rankme": 10 + step,
                   "health/feature_std": 0.05, "health/collapsed": 0.0}
            writer.writerow(row)
            if acc and step % 2 == 1:
                writer.writerow({"epoch": step // 2, "step": step, "probe/acc1": acc[step // 2]})


def test_results_table_and_plots_from_run_directories(tmp_path):
    runs = tmp_path / "outputs"
    _run_dir(runs, "ijepa", "a", [0.5, 0.3, 0.2, 0.25], acc=[0.4, 0.6])
    _run_dir(runs, "dmt_jepa", "b", [0.6, 0.4, 0.35, 0.3])
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n{BEGIN}\nold table\n{END}\n\n## Next\n")
    plots = tmp_path / "docs" / "results"
    run_command("python tools/results.py runs=outputs readme=README.md plots=docs/results", tmp_path,
                [f"runs={runs}", f"readme={readme}", f"plots={plots}"])
    text = readme.read_text()
    assert "old table" not in text and text.endswith("## Next\n")
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == {"ijepa/a", "dmt_jepa/b"}
    a = rows["ijepa/a"].split(" | ")
    assert a[4:6] == ["0.25", "0.2"] and a[6] == "13" and a[7] == "0.693" and a[-1].startswith("0.6 / 0.6")
    assert rows["dmt_jepa/b"].split(" | ")[-1].startswith("—")  # no probe logged
    for name in ("loss.png", "rankme.png", "probe_acc1.png"):
        picture = np.asarray(Image.open(plots / name).convert("RGB"))
        assert picture.shape == (350, 600, 3) and picture.std() > 5
        assert f"](docs/results/{name})" in text
