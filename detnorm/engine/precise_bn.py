"""PreciseBN: recompute BatchNorm population statistics before each evaluation.

The statistics update itself (:func:`detnorm.layers.batch_stats.update_bn_stats`) knows nothing
of Lightning; this module is the callback that runs it, as detectron2's ``PreciseBN`` hook runs
``update_bn_stats``: it is handed a factory of the batches to use (for training runs
:meth:`detnorm.data.datamodule.DetectionDataModule.precise_bn_loader`), runs the model in
training mode over ``num_iters`` of them with the global RNG states saved and restored, and
under DDP averages plain bn layers across ranks afterwards (sync_bn layers already see the
global batch), so every rank evaluates (and checkpoints) the same statistics.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from detnorm.layers.batch_stats import update_bn_stats
from detnorm.layers.norm import batchnorm_modules

__all__ = ["PreciseBN"]

log = logging.getLogger("detnorm.engine.precise_bn")


class PreciseBN(pl.Callback):
    """Run :func:`~detnorm.layers.batch_stats.update_bn_stats` over ``num_iters`` batches of
    ``data_loader()`` before each evaluation during ``fit`` (not in sanity checks, not in
    ``trainer.validate``).

    ``data_loader``: a callable with no arguments returning an iterable of training batches,
    called once per evaluation (so it can follow the global step), inside the saved RNG states;
    the training run after PreciseBN is the same as without it. For training runs pass
    ``datamodule.precise_bn_loader``. ``None`` uses the ``precise_bn_loader`` of the trainer's
    datamodule.
    """

    def __init__(self, num_iters: int = 200, data_loader: Callable[[], Iterable] | None = None):
        if num_iters < 1:
            raise ValueError(f"PreciseBN: num_iters must be >= 1, got {num_iters}")
        self.num_iters = num_iters
        self.data_loader = data_loader
        self.last_step: int | None = None  # global step of the last update (for tests/logs)

    def _loader_factory(self, trainer: pl.Trainer) -> Callable[[], Iterable]:
        if self.data_loader is not None:
            return self.data_loader
        factory = getattr(trainer.datamodule, "precise_bn_loader", None)
        if factory is None:
            raise RuntimeError(
                "PreciseBN needs a data_loader (or a datamodule with precise_bn_loader)"
            )
        return factory

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        model = pl_module.model
        if not batchnorm_modules(model):
            return
        make_batches = self._loader_factory(trainer)

        def forward(m: nn.Module, batch) -> None:
            images, targets = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            with trainer.precision_plugin.forward_context():
                m(images, targets)

        py_state, np_state = random.getstate(), np.random.get_state()
        devices = [torch.cuda.current_device()] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            used = update_bn_stats(model, make_batches(), self.num_iters, forward)
        random.setstate(py_state)
        np.random.set_state(np_state)
        if trainer.world_size > 1:
            for bn in batchnorm_modules(model):
                bn.running_mean.copy_(trainer.strategy.reduce(bn.running_mean, reduce_op="mean"))
                bn.running_var.copy_(trainer.strategy.reduce(bn.running_var, reduce_op="mean"))
        self.last_step = trainer.global_step
        log.info("PreciseBN: recomputed BN statistics over %d batches", used)
