"""``RUN_DIR/metrics.csv``: Lightning's CSV logger, kept across a resume.

:class:`RunCSVLogger` is the logger :func:`detnorm.engine.loggers.build_loggers` always puts
first. It lives apart from ``loggers`` because it subclasses Lightning's classes, and
``loggers`` (the ``--logger`` names, imported by the CLI and by config validation) must stay
importable without Lightning.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from detnorm.io import atomic_write

__all__ = ["RunCSVLogger"]


class _KeepingWriter(ExperimentWriter):
    """CSV writer that keeps an existing ``metrics.csv`` up to a step instead of deleting it."""

    def __init__(self, log_dir: str, keep_before_step: int | None):
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self.keep_before_step is None:  # a fresh run in an old directory starts a new log
            path.unlink()
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and int(r["step"]) < self.keep_before_step]
        self.metrics_keys = sorted(keys)

        def write(f) -> None:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)

        atomic_write(path, write)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``RUN_DIR/metrics.csv``. On resume from global step ``k`` it keeps
    the rows of steps ``< k`` (Lightning's logged ``step`` is 0-based) instead of deleting the
    file, so the log of a resumed run reads like the log of an uninterrupted one."""

    def __init__(self, save_dir, keep_before_step: int | None = None):
        super().__init__(save_dir=save_dir, name="", version="")
        self.keep_before_step = keep_before_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _KeepingWriter(self.log_dir, self.keep_before_step)
        return self._experiment
