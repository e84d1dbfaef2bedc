"""What to try when training stops on a non-finite loss: one short line per remedy that applies.

The remedies are the usual ones for a detector that diverges early: a lower LR, a longer warmup,
gradient clipping, and (the GN paper's point) a norm in the FPN and RoI heads, which the BN*
layout leaves without one. Each line names the flag and a value computed for this run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from detnorm.solver.schedule import ScheduleSpec, resolve_schedule

__all__ = ["CLIP_SUGGESTION", "nonfinite_remedies", "resolved_warmup", "warmup_iters_for"]

# Total gradient L2 norm to suggest when clipping is off (the value --clip-grad-norm is given).
CLIP_SUGGESTION = 10.0
_HEAD_FLAGS = {"fpn": "--fpn-norm", "box_head": "--box-head-norm", "mask_head": "--mask-head-norm"}


def resolved_warmup(warmup_iters: int, hparams: Mapping) -> int:
    """The warmup, in real steps, that ``--warmup-iters warmup_iters`` gives the run of
    ``hparams`` (its schedule, total batch size, ``max_steps`` and warmup floor)."""
    return resolve_schedule(
        hparams.get("schedule", "1x"),
        int(hparams.get("total_batch_size", 16)),
        max_steps=hparams.get("max_steps"),
        warmup_iters=warmup_iters,
        warmup_floor=bool(hparams.get("warmup_floor", False)),
    ).warmup_iters


def warmup_iters_for(steps: int, hparams: Mapping) -> int:
    """The smallest ``--warmup-iters`` (at 16 images per step) whose resolved warmup, for the
    schedule, batch and ``max_steps`` in ``hparams``, is at least ``steps`` real steps."""

    def resolved(iters: int) -> int:
        return resolved_warmup(iters, hparams)

    unit = max(1, resolved(1000))  # resolved steps per 1000 iterations: a first guess
    iters = max(1, math.ceil(steps * 1000 / unit))
    while iters > 1 and resolved(iters - 1) >= steps:
        iters -= 1
    while resolved(iters) < steps:
        iters += 1
    return iters


def nonfinite_remedies(
    hparams: Mapping, spec: ScheduleSpec, norms: Mapping[str, str], clip_grad_norm: float | None
) -> list[str]:
    """One line per remedy that applies to the run described by ``hparams`` (a DetnormModule's),
    its resolved schedule ``spec``, its per-component ``norms`` and its clipping value."""
    base_lr = float(hparams.get("base_lr", 0.02))
    batch = int(hparams.get("total_batch_size", 16))
    lines = [
        f"lower --base-lr (now {base_lr:g}: LR {spec.lr:g} at {batch} images per step), "
        f"e.g. --base-lr {base_lr / 4:g}"
    ]
    if spec.warmup_iters < spec.max_steps // 2:
        target = min(spec.max_steps // 2, max(2 * spec.warmup_iters, spec.max_steps // 5, 1))
        iters = warmup_iters_for(target, hparams)
        steps = resolved_warmup(iters, hparams)
        lines.append(
            f"a longer warmup (now {spec.warmup_iters} of {spec.max_steps} steps), e.g. "
            f"--warmup-iters {iters} ({steps} step{'' if steps == 1 else 's'})"
        )
    if clip_grad_norm is None:
        lines.append(f"clip the gradients: --clip-grad-norm {CLIP_SUGGESTION:g}")
    else:
        lines.append(f"a lower --clip-grad-norm (now {clip_grad_norm:g})")
    bare = [c for c in _HEAD_FLAGS if norms.get(c) == "none"]
    if bare:
        flags = " ".join(f"{_HEAD_FLAGS[c]} gn" for c in bare)
        lines.append(f"GN where the FPN and heads have no norm: {flags}")
    return lines
