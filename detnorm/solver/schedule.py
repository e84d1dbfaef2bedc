"""Learning-rate schedule: Detectron's recipe scaled to the real batch size.

Reference recipe (16 images per iteration): base LR 0.02, linear warmup from ``0.001 * LR``
over 1000 iterations, then LR x0.1 at two steps:

=========  ===========  =================
schedule   iterations   steps (x0.1)
=========  ===========  =================
1x         90k          60k, 80k
2x         180k         120k, 160k
3x         270k         210k, 250k
=========  ===========  =================

Linear scaling rule (Goyal et al.; detectron2's ``reference_world_size``): with ``B`` images per
iteration the LR is ``base_lr * B / 16`` and every iteration count (total, steps, warmup) is
multiplied by ``16 / B`` and rounded, so the run sees the same number of epochs.

``max_steps`` (``--max-steps``) shortens a run by compressing the whole scaled schedule: the
total becomes ``max_steps``; the two decay steps and the warmup keep their fractions of the
total (e.g. 1x with ``max_steps=300``: warmup ~3, steps 200 and 267). The LR is unchanged.
A ``max_steps`` larger than the schedule stretches it the same way.

``lr_schedule="cosine"`` (``--lr-schedule cosine``) keeps the warmup and replaces the two decay
steps by a half cosine from the peak LR to 0 at the last step (:class:`WarmupCosineFactor`).

Warmup is a number of iterations, not a fraction of the run: Detectron keeps 1000 iterations for
1x, 2x and 3x alike. Compressed with the schedule it collapses (1 step of a 100-step run), and
the first updates of freshly initialized heads then diverge. ``warmup_floor=True`` (the CLI's
default) keeps at least :func:`warmup_floor_steps` iterations of the real run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from detnorm.errors import ConfigError, check_int, check_number

__all__ = [
    "REFERENCE_BATCH",
    "SCHEDULES",
    "ScheduleSpec",
    "LR_SCHEDULES",
    "WarmupCosineFactor",
    "WarmupStepFactor",
    "build_lr_scheduler",
    "resolve_schedule",
    "warmup_floor_steps",
]

REFERENCE_BATCH = 16
LR_SCHEDULES = ("step", "cosine")  # after warmup: x0.1 at the milestones, or cosine to 0
# name -> (total iterations, decay steps) at REFERENCE_BATCH images per iteration
SCHEDULES: dict[str, tuple[int, tuple[int, ...]]] = {
    "1x": (90_000, (60_000, 80_000)),
    "2x": (180_000, (120_000, 160_000)),
    "3x": (270_000, (210_000, 250_000)),
}


@dataclass(frozen=True)
class ScheduleSpec:
    """A resolved schedule in real optimizer steps (iterations at the real batch size)."""

    lr: float  # peak LR after warmup
    max_steps: int
    milestones: tuple[int, ...]  # steps after which the LR is multiplied by gamma
    warmup_iters: int
    warmup_factor: float  # LR factor at step 0
    gamma: float = 0.1
    kind: str = "step"  # "step": x gamma at each milestone; "cosine": cosine to 0 at max_steps

    def as_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def resolve_schedule(
    schedule: str,
    total_batch_size: int,
    *,
    base_lr: float = 0.02,
    max_steps: int | None = None,
    warmup_iters: int = 1000,
    warmup_factor: float = 0.001,
    gamma: float = 0.1,
    warmup_floor: bool = False,
    lr_schedule: str = "step",
) -> ScheduleSpec:
    """Scale ``schedule`` ("1x"|"2x"|"3x") to ``total_batch_size`` images per step.

    ``base_lr`` and ``warmup_iters`` are given at 16 images per step, like the schedule.
    ``warmup_floor``: a compressed warmup keeps at least :func:`warmup_floor_steps` iterations
    (never more than the uncompressed warmup, so ``warmup_iters=0`` still means none).
    ``lr_schedule``: ``"step"`` (the recipe) or ``"cosine"`` (no milestones; the LR follows a
    half cosine from its peak at step 0 to 0 at ``max_steps``, times the same warmup).
    Raises ``ConfigError`` with the key of the bad argument (``schedule``, ``lr_schedule``,
    ``total_batch_size``, ``base_lr``, ``max_steps``, ``warmup_iters``, ``warmup_factor``).
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(
            "lr_schedule", f"unknown {lr_schedule!r}; allowed: {', '.join(LR_SCHEDULES)}"
        )
    if schedule not in SCHEDULES:
        raise ConfigError(
            "schedule", f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}"
        )
    check_int("total_batch_size", total_batch_size, 1)
    check_number("base_lr", base_lr, strict=True)
    if max_steps is not None:
        check_int("max_steps", max_steps, 1)
    check_int("warmup_iters", warmup_iters, 0)
    check_number("warmup_factor", warmup_factor, strict=True)
    if warmup_factor > 1.0:
        raise ConfigError("warmup_factor", f"must be in (0, 1], got {warmup_factor!r}")
    total, steps = SCHEDULES[schedule]
    scale = REFERENCE_BATCH / total_batch_size
    total_scaled = max(1, round(total * scale))
    steps_scaled = [round(s * scale) for s in steps]
    warmup_scaled = round(warmup_iters * scale)
    if max_steps is not None:
        ratio = max_steps / total_scaled
        steps_scaled = [round(s * ratio) for s in steps_scaled]
        full_warmup, warmup_scaled = warmup_scaled, round(warmup_scaled * ratio)
        if warmup_floor:
            warmup_scaled = max(warmup_scaled, min(full_warmup, warmup_floor_steps(max_steps)))
        total_scaled = max_steps
    return ScheduleSpec(
        lr=base_lr * total_batch_size / REFERENCE_BATCH,
        max_steps=total_scaled,
        milestones=tuple(steps_scaled) if lr_schedule == "step" else (),
        warmup_iters=warmup_scaled,
        warmup_factor=warmup_factor,
        gamma=gamma,
        kind=lr_schedule,
    )


def warmup_floor_steps(max_steps: int) -> int:
    """The shortest warmup of a ``max_steps``-step run: ``min(1000, max(50, ceil(10 %)), N // 2)``.

    1000 is the paper's warmup (no floor is longer than the published recipe); 50 iterations
    kept a fine-tuned BN* layout stable where the compressed 1 step diverged
    (``tests/test_finetune.py``); 10 % is the study's choice for runs of a few hundred steps; at
    most half the run, so a tiny run still reaches its peak LR.
    """
    return min(1000, max(50, math.ceil(max_steps / 10)), max_steps // 2)


class WarmupStepFactor:
    """LR multiplier at step ``it`` (0-based): linear warmup times step decay.

    ``factor(it) = w(it) * gamma ** (number of milestones <= it)`` where
    ``w(it) = warmup_factor + (1 - warmup_factor) * it / warmup_iters`` for ``it < warmup_iters``
    and 1 afterwards (detectron2's "linear" warmup). A plain object (not a lambda), so
    ``LambdaLR.state_dict`` stores it and checkpoints pickle.
    """

    def __init__(
        self, milestones: tuple[int, ...], warmup_iters: int, warmup_factor: float, gamma: float
    ):
        self.milestones = tuple(sorted(milestones))
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.gamma = gamma

    def __call__(self, it: int) -> float:
        decay = self.gamma ** sum(1 for m in self.milestones if it >= m)
        if it >= self.warmup_iters:
            return decay
        alpha = it / self.warmup_iters
        return decay * (self.warmup_factor * (1 - alpha) + alpha)


class WarmupCosineFactor(WarmupStepFactor):
    """LR multiplier at step ``it``: the same linear warmup times a half cosine,
    ``0.5 * (1 + cos(pi * it / max_steps))``, from 1 at step 0 to 0 at ``max_steps``
    (detectron2's ``WarmupParamScheduler`` over ``CosineParamScheduler(1, 0)``)."""

    def __init__(self, max_steps: int, warmup_iters: int, warmup_factor: float):
        super().__init__((), warmup_iters, warmup_factor, 1.0)
        self.max_steps = max(1, int(max_steps))

    def __call__(self, it: int) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(it, self.max_steps) / self.max_steps))
        return cosine * super().__call__(it)


def build_lr_scheduler(optimizer: Optimizer, spec: ScheduleSpec) -> LambdaLR:
    """``LambdaLR`` implementing ``spec``; the optimizer's group LRs must equal ``spec.lr``.

    Step it once per optimizer step (Lightning ``interval="step"``); the LR used at step ``it``
    is ``spec.lr * WarmupStepFactor(...)(it)`` (``WarmupCosineFactor`` for ``kind="cosine"``).
    """
    if spec.kind == "cosine":
        fn = WarmupCosineFactor(spec.max_steps, spec.warmup_iters, spec.warmup_factor)
    else:
        fn = WarmupStepFactor(spec.milestones, spec.warmup_iters, spec.warmup_factor, spec.gamma)
    return LambdaLR(optimizer, lr_lambda=fn)
