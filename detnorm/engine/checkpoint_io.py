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
from detnorm.weights.safe_load import WeightsError, safe_unpickling, torch_load

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


def load_detnorm_module(path: str | os.PathLike, *, trust: bool = False, map_location="cpu"):
    """``DetnormModule.load_from_checkpoint(path)`` under :func:`torch_load`'s rules.

    Raises :class:`~detnorm.weights.safe_load.UnsafeWeightsError` for a file that needs a
    blocked global (unless ``trust``), and :class:`~detnorm.weights.safe_load.WeightsError`
    naming the file for anything else that is not a detnorm checkpoint; never runs code from
    the file unless ``trust``.
    """
    from detnorm.engine.module import DetnormModule  # the model, recipe and Lightning: heavy

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path}")
    try:
        if trust:
            return DetnormModule.load_from_checkpoint(
                path, map_location=map_location, weights_only=False
            )
        with safe_unpickling(path):
            return DetnormModule.load_from_checkpoint(
                path, map_location=map_location, weights_only=True
            )
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - torch and Lightning raise many kinds here
        detail = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(f"{path}: not a detnorm checkpoint ({detail})") from None
