"""Checkpoint I/O of training runs: atomic saves, and loads that never run code from the file.

Checkpoints go through :class:`AtomicCheckpointIO`: the bytes are written to a temporary file in
the checkpoint's own folder, fsync'ed and renamed over the target with ``os.replace``, so a run
killed at any moment (SIGKILL included) leaves either the previous complete file or the new one.
Lightning's default (fsspec's local "transaction") writes to the system temp dir and then
``shutil.move``s, which degrades to a non-atomic copy across file systems and never fsyncs.

Loads (``--resume``, :func:`load_detnorm_module`) follow
:func:`detnorm.weights.safe_load.torch_load`'s rules: nothing of the file runs unless ``trust``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from detnorm.io import atomic_write
from detnorm.weights.safe_load import UnsafeWeightsError, WeightsError, read_weights, torch_load

__all__ = ["AtomicCheckpointIO", "WeightsError", "load_detnorm_module"]  # WeightsError: re-exported


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on a local file system (see module doc) and
    whose loads (``--resume``) never run code from the file unless ``trust``
    (:func:`detnorm.weights.safe_load.torch_load`)."""

    def __init__(self, trust: bool = False):
        super().__init__()
        self.trust = bool(trust)

    def load_checkpoint(self, path, map_location="cpu", weights_only=None) -> dict[str, Any]:
        """``weights_only`` (Lightning's argument) is ignored: ``self.trust`` decides."""
        return torch_load(path, trust=self.trust, map_location=map_location)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        atomic_write(path, functools.partial(torch.save, checkpoint), binary=True)


def load_detnorm_module(path: str | os.PathLike, *, trust: bool = False):
    """A ``DetnormModule`` (eval mode, CPU) rebuilt from a ``tools/train.py`` checkpoint alone.

    The file is read by :func:`detnorm.weights.safe_load.read_weights` (nothing in it runs unless
    ``trust``, ``--trust-weights``); the model is built from the hyperparameters stored in it
    (of any detnorm version, :meth:`DetnormModule.from_hparams`) and loaded strictly. Raises
    :class:`~detnorm.weights.safe_load.UnsafeWeightsError` for a file that needs a blocked
    global, and :class:`~detnorm.weights.safe_load.WeightsError` naming the file for anything
    else that is not a detnorm checkpoint.
    """
    from detnorm.engine.module import DetnormModule  # the model, recipe and Lightning: heavy

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        fmt, state, _ignored, hparams = read_weights(path, trust=trust)
    except UnsafeWeightsError:
        raise
    except ValueError as e:  # WeightsError: unreadable or of no known format
        raise WeightsError(f"not a detnorm checkpoint: {e}") from None
    if fmt != "detnorm" or not hparams:
        raise WeightsError(f"{path}: a {fmt} file, not a detnorm checkpoint (tools/train.py "
                           "writes those); load other weights with detnorm.weights.load_weights")  # fmt: skip
    try:
        module = DetnormModule.from_hparams(hparams)
        module.model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise WeightsError(
            f"{path}: cannot rebuild the model from this checkpoint: {first}"
        ) from None
    return module.eval()
