"""SIGTERM and SIGINT during training: save a resumable checkpoint, then stop.

Clusters send SIGTERM before they preempt a job, and Ctrl+C sends SIGINT. While training runs,
:class:`GracefulStop` takes both signals over (Lightning's own SIGTERM handler only stops the loop;
it saves nothing). The handler only records the signal. At the end of the training step in
progress, every rank agrees to stop, ``last.ckpt`` is written through the run's
:class:`~detnorm.engine.callbacks.RunCheckpoints` (the same atomic save as the periodic checkpoints, so
``--resume auto`` continues exactly as from those), and :class:`RunInterrupted` ends ``fit``.
When an evaluation follows that step, or is running, the stop comes after it and its checkpoint
(a checkpoint taken before it would resume past it). A second signal of the same kind restores
the default action (a second Ctrl+C kills at once).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytorch_lightning as pl

__all__ = ["GracefulStop", "RunInterrupted"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _validates_now(trainer) -> bool:
    """Whether Lightning evaluates right after the current training batch (its own test).

    A checkpoint taken before that evaluation would resume past it, and the run would lose it."""
    try:
        return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(None))
    except Exception:  # noqa: BLE001 - a private Lightning API: without it, stop at once
        return False


class RunInterrupted(Exception):
    """Training stopped by a signal; ``checkpoint`` holds the state at ``step`` (or None)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        name = signal.Signals(signum).name
        saved = f"saved {checkpoint}" if checkpoint else "no new checkpoint (the last one stays)"
        super().__init__(f"{name} at step {step}; {saved}")


class GracefulStop(pl.Callback):
    """Install SIGTERM/SIGINT handlers for ``fit`` and stop at the next step boundary with a
    checkpoint. ``checkpoints``: the run's ``RunCheckpoints`` callback (it must come before
    this callback in the Trainer's list, so a periodic save of the same step happens first)."""

    def __init__(self, checkpoints):
        self.checkpoints = checkpoints
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._saved_step: int | None = None

    # ------------------------------------------------------------------ handlers
    def _handler(self, signum, frame) -> None:
        if self.signum == signum:  # second time: the default action
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum

    def on_train_start(self, trainer, pl_module) -> None:
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    # --------------------------------------------------------------------- stops
    def _requested(self, trainer) -> int | None:
        """The signal, agreed by every rank (any rank's signal stops all)."""
        local = 0 if self.signum is None else int(self.signum)
        if trainer.world_size > 1:
            import torch

            t = torch.tensor([local], device=trainer.strategy.root_device)
            local = int(trainer.strategy.reduce(t, reduce_op="max").item())
        return local or None

    def _stop(self, trainer, signum: int, *, save: bool) -> None:
        ckpt = None
        step = trainer.global_step
        if save:
            if self._saved_step != step:  # not saved at this step yet
                self.checkpoints._save(trainer, "last.ckpt")
            ckpt = self.checkpoints.dirpath / "last.ckpt"
        self._restore()
        raise RunInterrupted(signum, step, ckpt)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = self._requested(trainer)
        if signum is None:
            return
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: stop after this optimizer step's last batch
        # the last step is saved only after its evaluation (RunCheckpoints): stop without a new
        # checkpoint; a resumed run takes that step again from the previous one
        step = trainer.global_step
        final = trainer.max_steps > 0 and step >= trainer.max_steps
        if not final and _validates_now(trainer):
            return  # this step's evaluation runs first; on_validation_end stops after it
        if self.checkpoints._periodic(step) and not final:  # RunCheckpoints just saved it
            self._saved_step = step
        self._stop(trainer, signum, save=not final)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return  # the run is complete: it ends normally
        signum = self._requested(trainer)
        if signum is not None:  # RunCheckpoints saved last.ckpt after this evaluation already
            self._saved_step = trainer.global_step
            self._stop(trainer, signum, save=True)
