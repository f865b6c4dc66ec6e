"""A CSV logger whose history survives a resume.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it finds one (a resumed run would lose the
curve of every earlier attempt). This one keeps it: the first rows a run logs tell at which step it
(re)starts, rows at or after that step (logged after the checkpoint the run resumed from) are dropped,
and the new rows are appended.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # keep what an earlier attempt wrote
        self._trimmed = False

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        if not self._trimmed and step is not None:
            self._trim_from(step)
        super().log_metrics(metrics_dict, step)

    def _trim_from(self, step: int) -> None:
        self._trimmed = True
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if row.get("step") not in (None, "") and int(row["step"]) < step]
        with open(self.metrics_file_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = [k for k in keys]


class ResumableCSVLogger(CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends across resumes.

    Config keys (``configs/logger/csv.yaml``): ``save_dir``, ``name``, ``version``.
    """

    def __init__(self, save_dir: str, name: str = "csv", version: str = "") -> None:
        super().__init__(save_dir=save_dir, name=name, version=version)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
