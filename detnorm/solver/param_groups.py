"""Optimizer parameter groups: weight decay for weights, its own (0 by default) for norms."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from detnorm.layers.norm import is_norm_module

__all__ = ["param_groups"]


def _norm_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    for module in model.modules():
        if is_norm_module(module):
            yield from module.parameters(recurse=False)


def param_groups(
    model: nn.Module, *, weight_decay: float, norm_weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer parameter groups: norm parameters get ``norm_weight_decay`` (0 by default).

    Norm parameters are those of the modules :func:`detnorm.layers.norm.is_norm_module` names
    (GN/BN affine weights and biases). Every trainable parameter appears exactly once (shared
    parameters are counted once); frozen parameters (``requires_grad=False``) are left out.
    Groups carry a ``"name"`` key (``"default"`` or ``"norm"``) and empty groups are dropped.
    """
    norm_ids = {id(p) for p in _norm_parameters(model)}
    seen: set[int] = set()
    default: list[nn.Parameter] = []
    norm: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (norm if id(p) in norm_ids else default).append(p)
    groups = [
        {"name": "default", "params": default, "weight_decay": weight_decay},
        {"name": "norm", "params": norm, "weight_decay": norm_weight_decay},
    ]
    return [g for g in groups if g["params"]]
