"""Per-step seeding: the randomness of a training step depends only on ``(seed, step, rank)``.

:class:`StepSeed` reseeds ``random``, numpy and torch before every training step from
:func:`step_seed`, so a run resumed from a checkpoint takes exactly the steps an uninterrupted
run takes (``benchmarks/bench_overhead.py`` uses the same seeds in its plain loop).
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = ["StepSeed", "step_seed"]


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
