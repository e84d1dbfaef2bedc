"""Recompute BatchNorm population statistics with the weights fixed (PreciseBN's update).

BN's running statistics are an exponential moving average over training iterations whose
weights were changing, so they lag behind the final weights. "Rethinking 'Batch' in
BatchNorm" (Wu & Johnson, 2021) recomputes them with the weights frozen; detectron2's
``update_bn_stats`` (``fvcore.nn.precise_bn``) is the reference implemented here:

* every BN layer that tracks statistics (:func:`detnorm.layers.norm.batchnorm_modules`) gets
  ``momentum = 1``, so after a forward its ``running_mean``/``running_var`` hold exactly that
  batch's mean and (unbiased) variance;
* the model runs in training mode, without gradients, over ``num_iters`` batches;
* the population statistics are the plain average of the per-batch means and variances
  (``avg += (batch - avg) / (i + 1)``), then the momenta are restored.

The Lightning callback that runs it before each evaluation is
:class:`detnorm.engine.precise_bn.PreciseBN`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from detnorm.layers.norm import batchnorm_modules

__all__ = ["update_bn_stats"]

log = logging.getLogger("detnorm.layers.batch_stats")


def _call(model: nn.Module, batch: Any) -> Any:
    return model(batch)


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
    forward = forward or _call
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
