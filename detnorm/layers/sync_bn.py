"""Synchronized batch normalization that runs on every device and backend, CPU/gloo included.

``SyncBatchNorm`` is a drop-in ``nn.BatchNorm2d`` (same constructor, same state_dict keys) whose
training-mode statistics are computed over the whole process group, each rank weighted by its
element count ``N*H*W``. A rank whose local batch is empty (``N == 0``, e.g. a RoI head that
received no proposals) still takes part in every collective and contributes nothing.

Design
------
Statistics (forward), for input ``x`` of shape ``(N, C, H, W)`` on rank ``r``:

1. each rank computes its local count ``n_r`` and per-channel mean/biased variance with
   ``torch.var_mean`` (a fused Welford pass, no full-size temporary), or zeros if ``n_r == 0``;
2. all-reduce ``[n_r * mean_r, n_r]`` -> global count ``n`` and global mean ``mu``;
3. all-reduce ``n_r * var_r + n_r * (mean_r - mu)**2`` -> global sum of squared deviations ``M2``
   (Chan et al.'s parallel combination), so ``var = M2 / n``.

Step 3 never subtracts two large sums (no ``E[x^2] - E[x]^2`` cancellation), and the cross-rank
vectors are combined in float64, so the result matches single-process BN on the joined batch to
float32 rounding. Half-precision inputs are upcast to float32 for the statistics.

Gradients (backward) come from a custom ``autograd.Function`` rather than from autograd through a
differentiable all-reduce: the forward saves only ``x``, the mean and ``1/std``; the backward
all-reduces the two per-channel sums ``sum(dy)`` and ``sum(dy * (x - mu))`` (one collective of
``2*C`` values) and applies the BN input-gradient formula with the global count. This equals the
gradient of single-process BN on the concatenated batch when the total loss is the sum of the
ranks' losses (what DDP's gradient averaging assumes up to the constant ``1/world_size``).
``weight``/``bias`` gradients are local, like every other parameter; DDP averages them.

One code path on every device. torch's ``nn.SyncBatchNorm`` kernels refuse CPU tensors, and the
tests of this project run on CPU/gloo only; using this implementation on CUDA too means the
behaviour those tests check (count weighting, empty ranks, an entirely empty global batch that
leaves the running statistics untouched, running-stat updates) is exactly what users get on GPU,
instead of a second, untested path with its own edge cases. The cost is small and of the same
order as torch's: O(C) values per layer go over the wire (two all-reduces forward, one backward,
versus torch's one all-gather forward and one all-reduce backward), one host sync per layer reads
the global count (torch's CUDA path also syncs to drop empty ranks), and the backward allocates a
couple of full-size temporaries that torch's fused kernels avoid. With world size 1, or no process
group, the module is plain ``nn.BatchNorm2d`` (cuDNN on GPU).

Contract shared with every collective: all ranks of the group must call ``forward`` (and
``backward``) of each ``SyncBatchNorm`` the same number of times and in the same order, empty
ranks included. Do not combine with Lightning's ``Trainer(sync_batchnorm=True)``: that converts
every ``_BatchNorm`` subclass, this one included, to torch's CUDA-only ``nn.SyncBatchNorm``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["SyncBatchNorm"]

_DIMS = (0, 2, 3)  # reduction dims of an (N, C, H, W) tensor


def _world_size(group: Any) -> int:
    """Size of ``group`` (None = default group), or 1 when torch.distributed is not initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half/bfloat16/float32 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _global_stats(x: Tensor, group: Any) -> tuple[int, Tensor, Tensor]:
    """Per-channel statistics of ``x`` (N, C, H, W) over all ranks of ``group``.

    Returns ``(count, mean, var)``: the global element count per channel ``sum_r N_r*H_r*W_r``
    (the same int on every rank), and float64 tensors of shape (C,) holding the mean and the
    biased variance. With ``count == 0`` both are zeros.
    """
    x = x.detach()
    c = x.shape[1]
    n_local = x.numel() // c if c else 0
    if n_local > 0:
        var_l, mean_l = torch.var_mean(x.to(_acc_dtype(x.dtype)), dim=_DIMS, correction=0)
        mean_l, var_l = mean_l.double(), var_l.double()
    else:
        mean_l = var_l = torch.zeros(c, dtype=torch.float64, device=x.device)
    packed = torch.cat([mean_l * n_local, mean_l.new_full((1,), float(n_local))])
    dist.all_reduce(packed, group=group)
    count = int(packed[c].item())
    mean = packed[:c] / max(count, 1)
    m2 = n_local * (var_l + (mean_l - mean) ** 2)
    dist.all_reduce(m2, group=group)
    return count, mean, m2 / max(count, 1)


def _per_channel(v: Tensor) -> Tensor:
    return v.view(1, -1, 1, 1)


class _SyncBNFunction(torch.autograd.Function):
    """Normalization with precomputed global stats; backward all-reduces the gradient sums."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, count, group):
        # x: (N, C, H, W); mean, invstd: (C,) in the accumulation dtype; count: global int.
        scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
        shift = -mean * scale if bias is None else bias.to(invstd.dtype) - mean * scale
        y = torch.addcmul(_per_channel(shift), x, _per_channel(scale)).to(x.dtype)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count, ctx.group = count, group
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors
        acc = invstd.dtype
        xmu = x.to(acc) - _per_channel(mean)
        sums = torch.cat(
            [dy.sum(dim=_DIMS, dtype=acc), (dy * xmu).sum(dim=_DIMS, dtype=acc)]
        )  # local [sum(dy), sum(dy * (x - mu))], shape (2C,)
        c = mean.numel()
        grad_w = (sums[c:] * invstd).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_b = sums[:c].to(weight.dtype, copy=True) if ctx.needs_input_grad[2] else None
        # Every rank all-reduces, whatever its needs_input_grad, so no rank can wait alone.
        dist.all_reduce(sums, group=ctx.group)
        n = max(ctx.count, 1)
        k = invstd if weight is None else invstd * weight.to(acc)
        grad_x = None
        if ctx.needs_input_grad[0]:
            mean_dy = _per_channel(sums[:c] / n)
            proj = _per_channel(invstd * invstd * sums[c:] / n)
            grad_x = ((dy.to(acc) - mean_dy - xmu * proj) * _per_channel(k)).to(x.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


class SyncBatchNorm(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are shared across a process group.

    Input and output: ``(N, C, H, W)``, any float dtype, any device, ``N`` may be 0.

    * training, process group initialized with world size > 1: mean/variance over the joined batch
      of all ranks, each rank weighted by ``N*H*W``; running stats updated as BN does with the
      global mean and the unbiased global variance (``momentum``; ``None`` = cumulative average).
      If every rank is empty the running stats and ``num_batches_tracked`` are left unchanged;
      a global count of 1 raises ``ValueError``, as ``nn.BatchNorm2d`` does for one value.
    * otherwise (eval mode, no process group, world size 1): exactly ``nn.BatchNorm2d``.

    ``process_group``: the group to sync over; ``None`` = the default (world) group, looked up at
    each forward, so the module can be built before ``init_process_group``. A custom group is a
    process-local handle: ``copy.deepcopy`` shares it, pickling drops it (with a warning).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or _world_size(self.process_group) <= 1:
            return super().forward(input)
        count, mean, var = _global_stats(input, self.process_group)
        if count == 1:
            raise ValueError(
                "SyncBatchNorm: expected more than 1 value per channel when training, got a "
                f"global batch of 1 (local input size {tuple(input.shape)})"
            )
        if self.track_running_stats and count > 0:
            self._update_running_stats(mean, var, count)
        acc = _acc_dtype(input.dtype)
        invstd = torch.rsqrt(var + self.eps).to(acc)
        return _SyncBNFunction.apply(
            input, self.weight, self.bias, mean.to(acc), invstd, count, self.process_group
        )

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm2d
            factor = 1.0 / float(self.num_batches_tracked.item())
        else:
            factor = self.momentum
        unbiased = var * (count / (count - 1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

    @classmethod
    def from_batchnorm(cls, bn: nn.Module, process_group: Any = None) -> SyncBatchNorm:
        """A ``SyncBatchNorm`` with a copy of ``bn``'s hyperparameters, parameters and buffers.

        ``bn``: an ``nn.BatchNorm2d`` (this class included) or a torch ``nn.SyncBatchNorm``. The
        copy keeps device, dtype, ``requires_grad`` flags and training mode.
        """
        if not isinstance(bn, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            raise TypeError(
                "SyncBatchNorm.from_batchnorm: expected nn.BatchNorm2d or nn.SyncBatchNorm, "
                f"got {type(bn).__name__}"
            )
        ref = next(iter(bn.state_dict().values()), None)
        factory = {} if ref is None else {"device": ref.device}
        if bn.affine:
            factory["dtype"] = bn.weight.dtype
        elif bn.running_mean is not None:
            factory["dtype"] = bn.running_mean.dtype
        new = cls(
            bn.num_features,
            bn.eps,
            bn.momentum,
            bn.affine,
            bn.track_running_stats,
            process_group=process_group,
            **factory,
        )
        new.load_state_dict(bn.state_dict())
        if bn.affine:
            new.weight.requires_grad_(bn.weight.requires_grad)
            new.bias.requires_grad_(bn.bias.requires_grad)
        return new.train(bn.training)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if state.get("process_group") is not None:
            warnings.warn(
                "SyncBatchNorm: a process group cannot be pickled; the unpickled module syncs "
                "over the default group until .process_group is set again",
                stacklevel=2,
            )
            state["process_group"] = None
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> SyncBatchNorm:
        # Same as the default deepcopy, except that the process group handle is shared.
        group = self.__dict__.get("process_group")
        if group is not None:
            memo[id(group)] = group
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(super().__getstate__(), memo))
        return new
