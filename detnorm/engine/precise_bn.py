"""PreciseBN: recompute BatchNorm population statistics before evaluation.

BN's running statistics are an exponential moving average over training iterations whose
weights were changing, so they lag behind the final weights. "Rethinking 'Batch' in
BatchNorm" (Wu & Johnson, 2021) recomputes them with the weights frozen; detectron2's
``PreciseBN`` hook is the reference implemented here:

* every BN layer that tracks statistics (``detnorm.layers.norm.batchnorm_modules``) gets
  ``momentum = 1``, so after a forward its ``running_mean``/``running_var`` hold exactly that
  batch's mean and (unbiased) variance;
* the model runs in training mode, without gradients, over ``num_iters`` training batches;
* the population statistics are the plain average of the per-batch means and variances
  (``avg += (batch - avg) / (i + 1)``), then the momenta are restored.

Under DDP, sync_bn layers already see the global batch; plain bn layers are averaged across
ranks afterwards so every rank evaluates (and checkpoints) the same statistics.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from detnorm.layers.norm import batchnorm_modules

__all__ = ["PreciseBN", "update_bn_stats"]

log = logging.getLogger("detnorm.engine.precise_bn")


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    batches: Iterable[Any],
    num_iters: int,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> int:
    """Set each BN layer's running stats to the average of ``num_iters`` batches' statistics.

    ``forward(model, batch)`` runs one batch (default ``model(batch)``). The model is put in
    training mode for the duration and its previous modes are restored. Returns the number of
    batches used (fewer than ``num_iters`` only if ``batches`` runs out, which is logged).
    """
    bns = batchnorm_modules(model)
    if not bns or num_iters < 1:
        return 0
    forward = forward or (lambda m, b: m(b))
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    means = [torch.zeros_like(bn.running_mean) for bn in bns]
    variances = [torch.zeros_like(bn.running_var) for bn in bns]
    used = 0
    try:
        model.train()
        for bn in bns:
            bn.momentum = 1.0
        for i, batch in enumerate(itertools.islice(batches, num_iters)):
            forward(model, batch)
            for bn, mean, var in zip(bns, means, variances, strict=True):
                mean += (bn.running_mean - mean) / (i + 1)
                var += (bn.running_var - var) / (i + 1)
            used = i + 1
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training
    if used:
        for bn, mean, var in zip(bns, means, variances, strict=True):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    if used < num_iters:
        log.warning("PreciseBN: only %d of %d batches were available", used, num_iters)
    return used


def _cycle_batches(make_loader: Callable[[int], Iterable]) -> Iterable:
    """Batches of epoch 0, 1, 2, ... of ``make_loader(epoch)``, for as long as needed."""
    for epoch in itertools.count():
        empty = True
        for batch in make_loader(epoch):
            empty = False
            yield batch
        if empty:
            return


class PreciseBN(pl.Callback):
    """Run :func:`update_bn_stats` over ``num_iters`` training batches before each evaluation
    during ``fit`` (not in sanity checks, not in ``trainer.validate``).

    Batches come from ``loader_fn(trainer, epoch)`` when given, else from a loader over the
    datamodule's ``train_set`` with its own aspect-grouped sampler (seeded from the step, so
    the training sampler's state is untouched). The global RNG states are saved and restored
    around it, so the training run after it is the same as without it.
    """

    def __init__(self, num_iters: int = 200, loader_fn: Callable | None = None):
        if num_iters < 1:
            raise ValueError(f"PreciseBN: num_iters must be >= 1, got {num_iters}")
        self.num_iters = num_iters
        self.loader_fn = loader_fn
        self.last_step: int | None = None  # global step of the last update (for tests/logs)

    def _default_loader(self, trainer: pl.Trainer, epoch: int) -> DataLoader:
        from detnorm.data.datamodule import collate_detection
        from detnorm.data.sampler import GroupedBatchSampler

        dm = trainer.datamodule
        if dm is None or getattr(dm, "train_set", None) is None:
            raise RuntimeError("PreciseBN needs a datamodule with train_set (or a loader_fn)")
        sampler = GroupedBatchSampler(
            dm.train_set.aspect_groups(),
            dm.batch_size,
            num_replicas=trainer.world_size,
            rank=trainer.global_rank,
            seed=dm.seed + 7919 * (trainer.global_step + 1),
            with_seeds=True,
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            dm.train_set,
            batch_sampler=sampler,
            num_workers=dm.num_workers,
            collate_fn=collate_detection,
        )

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        model = pl_module.model
        if not batchnorm_modules(model):
            return
        loader_fn = self.loader_fn or self._default_loader
        batches = _cycle_batches(lambda epoch: loader_fn(trainer, epoch))

        def forward(m: nn.Module, batch) -> None:
            images, targets = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            with trainer.precision_plugin.forward_context():
                m(images, targets)

        py_state, np_state = random.getstate(), np.random.get_state()
        devices = [torch.cuda.current_device()] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            used = update_bn_stats(model, batches, self.num_iters, forward)
        random.setstate(py_state)
        np.random.set_state(np_state)
        if trainer.world_size > 1:
            for bn in batchnorm_modules(model):
                bn.running_mean.copy_(trainer.strategy.reduce(bn.running_mean, reduce_op="mean"))
                bn.running_var.copy_(trainer.strategy.reduce(bn.running_var, reduce_op="mean"))
        self.last_step = trainer.global_step
        log.info("PreciseBN: recomputed BN statistics over %d batches", used)
