"""Training callbacks: the run's checkpoints, the final evaluation, the report of images that
failed to decode, and the error of the non-finite-loss stop.

Checkpoint files are written through :class:`~detnorm.engine.checkpoint_io.AtomicCheckpointIO`
(atomic saves); per-step seeding is :class:`~detnorm.engine.seeding.StepSeed` and the CSV log
:class:`~detnorm.engine.csv_logger.RunCSVLogger`.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

__all__ = [
    "EvalAtEnd",
    "NonFiniteLossError",
    "RunCheckpoints",
    "UndecodableReport",
]


class NonFiniteLossError(FloatingPointError):
    """Raised on every rank when any rank's loss is NaN or infinite; names the step."""


class EvalAtEnd(pl.Callback):
    """Make Lightning evaluate after the last training step even when ``max_steps`` is not a
    multiple of ``val_check_interval``: on the last step it sets ``trainer.should_stop``, and
    Lightning validates when a stop is requested."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


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
