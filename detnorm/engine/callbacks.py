"""Training callbacks and checkpoint I/O: crash-safe checkpoints, the final evaluation,
per-step seeding and the non-finite-loss stop.

Checkpoints go through :class:`AtomicCheckpointIO`: the bytes are written to a temporary file in
the checkpoint's own folder, fsync'ed and renamed over the target with ``os.replace``, so a run
killed at any moment (SIGKILL included) leaves either the previous complete file or the new one.
Lightning's default (fsspec's local "transaction") writes to the system temp dir and then
``shutil.move``s, which degrades to a non-atomic copy across file systems and never fsyncs.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from detnorm.io import atomic_write

__all__ = [
    "AtomicCheckpointIO",
    "EvalAtEnd",
    "NonFiniteLossError",
    "RunCSVLogger",
    "RunCheckpoints",
    "StepSeed",
    "UndecodableReport",
    "step_seed",
]


class NonFiniteLossError(FloatingPointError):
    """Raised on every rank when any rank's loss is NaN or infinite; names the step."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on a local file system (see module doc) and
    whose loads (``--resume``) never run code from the file unless ``trust``
    (:func:`detnorm.weights.safe_load.torch_load`)."""

    def __init__(self, trust: bool = False):
        super().__init__()
        self.trust = bool(trust)

    def load_checkpoint(self, path, map_location="cpu", weights_only=None) -> dict[str, Any]:
        """``weights_only`` (Lightning's argument) is ignored: ``self.trust`` decides."""
        from detnorm.weights.safe_load import torch_load

        return torch_load(path, trust=self.trust, map_location=map_location)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        atomic_write(path, functools.partial(torch.save, checkpoint), binary=True)


class EvalAtEnd(pl.Callback):
    """Make Lightning evaluate after the last training step even when ``max_steps`` is not a
    multiple of ``val_check_interval``: on the last step it sets ``trainer.should_stop``, and
    Lightning validates when a stop is requested."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


def step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    """A 32-bit seed that depends only on ``(seed, step, rank)`` and, for the later batches of
    an accumulated step, on ``micro`` (the batch's index within the step)."""
    key = f"detnorm:{seed}:{step}:{rank}" + (f":{micro}" if micro else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little")


class StepSeed(pl.Callback):
    """Reseed torch/numpy/random before every training step from ``(seed, step, rank)``.

    The model's own randomness (RPN and RoI sampling) then does not depend on what ran before
    the step (validation, PreciseBN, data-loader start-up), so a run resumed from a checkpoint
    takes exactly the steps an uninterrupted run takes.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        micro = batch_idx % trainer.accumulate_grad_batches  # batch within an accumulated step
        s = step_seed(self.seed, trainer.global_step, trainer.global_rank, micro)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # also seeds every CUDA device


class RunCheckpoints(pl.Callback):
    """The run directory's checkpoints: ``last.ckpt``, ``best.ckpt``, ``step=NNNNNN.ckpt``.

    * every ``period`` steps (after the optimizer step): ``step=N.ckpt`` and ``last.ckpt``;
    * after every evaluation in ``fit``: ``last.ckpt`` again (now with PreciseBN statistics and
      the evaluation's metrics), ``best.ckpt`` when ``val/score`` (segm AP, else bbox AP)
      improved, and ``step=N.ckpt`` when N is a multiple of ``period`` or the last step.

    The last step is saved only after its evaluation, so a run killed during the final
    evaluation resumes from the previous checkpoint and evaluates again. Nothing is saved once
    a step failed (non-finite loss): the files keep the last good state.
    """

    def __init__(self, dirpath, period: int | None):
        self.dirpath = Path(dirpath)
        self.period = period
        self.best_score: float | None = None
        self.best_step: int | None = None

    def _save(self, trainer: pl.Trainer, *names: str) -> None:
        """Write the checkpoint once, under ``names[0]``, and hard-link the other names to it
        (atomically, via a temporary link and ``os.replace``; a copy where links fail)."""
        for logger in trainer.loggers:  # metrics.csv holds every step the checkpoint has seen
            logger.save()
        first = self.dirpath / names[0]
        trainer.save_checkpoint(first, weights_only=False)
        if not trainer.is_global_zero:
            return
        for name in names[1:]:
            tmp = self.dirpath / f".{name}.link.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(first, tmp)
            except OSError:
                shutil.copyfile(first, tmp)
            os.replace(tmp, self.dirpath / name)

    def _periodic(self, step: int) -> bool:
        return bool(self.period) and step % self.period == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:  # mid-accumulation: no step yet
            return
        step = trainer.global_step
        if self._periodic(step) and not (trainer.max_steps > 0 and step >= trainer.max_steps):
            self._save(trainer, f"step={step:06d}.ckpt", "last.ckpt")

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        step = trainer.global_step
        names = ["last.ckpt"]
        score = trainer.callback_metrics.get("val/score")
        score = None if score is None else float(score)
        improved = self.best_score is None or (score is not None and score > self.best_score)
        if score is not None and not math.isnan(score) and improved:
            self.best_score, self.best_step = score, step
            names.append("best.ckpt")
        if self._periodic(step) or (trainer.max_steps > 0 and step >= trainer.max_steps):
            names.insert(0, f"step={step:06d}.ckpt")
        self._save(trainer, *names)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_step = state_dict.get("best_step")


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


class UndecodableReport(pl.Callback):
    """One warning at the end of a training epoch (and of training) naming the training images
    that passed the setup check but failed to decode and were replaced by another image of the
    same aspect group (``DetectionDataModule.undecodable``, counted on this rank)."""

    def __init__(self):
        self._reported = 0

    def _report(self, trainer: pl.Trainer, when: str) -> None:
        from detnorm.data.image_check import MAX_LISTED, log

        failed = getattr(trainer.datamodule, "undecodable", None) or {}
        if len(failed) <= self._reported:
            return
        shown = "; ".join(f"id {i}: {why}" for i, why in list(failed.items())[:MAX_LISTED])
        more = f"; ... and {len(failed) - MAX_LISTED} more" if len(failed) > MAX_LISTED else ""
        log.warning("%s: %d training image(s) failed to decode and were replaced by another image "
                    "of the same aspect group (rank %d): %s%s", when, len(failed),
                    trainer.global_rank, shown, more)  # fmt: skip
        self._reported = len(failed)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._report(trainer, f"epoch {trainer.current_epoch}")

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._report(trainer, "end of training")
