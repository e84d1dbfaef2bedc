"""The norm vocabulary: the only place where norm names become modules.

Every component of the model (backbone, FPN, box head, mask head) takes a norm *name*
from :data:`NORM_NAMES`. :func:`norm_layer` turns the name into a picklable callable
``num_channels -> nn.Module`` (or ``None`` for ``"none"``), and
:func:`finalize_component` applies the norm's rule for convolutions (weight
standardization for ``gn_ws``) to a built component. Model code calls these two
functions and never branches on a name.

Names:

========== ===============================================================
none       no normalization (convolutions keep their bias)
bn         ``nn.BatchNorm2d``: batch statistics of the local batch
frozen_bn  BN frozen into an affine map (``FrozenBatchNorm2d``, buffers only)
sync_bn    BN with statistics synchronized across DDP ranks
gn         ``nn.GroupNorm`` with ``groups`` groups (or ``channels_per_group``)
ln         GroupNorm with 1 group: LayerNorm over (C, H, W)
in         GroupNorm with C groups: affine InstanceNorm
gn_ws      GroupNorm plus weight-standardized convolutions in that component
========== ===============================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.layers.sync_bn import SyncBatchNorm

__all__ = [
    "NORM_NAMES",
    "FrozenBatchNorm2d",
    "SyncBatchNorm",
    "WSConv2d",
    "batchnorm_modules",
    "convert_frozen_bn",
    "convert_sync_bn",
    "convert_ws_conv",
    "default_for_component",
    "describe_norm",
    "finalize_component",
    "is_norm_module",
    "norm_layer",
    "param_groups",
    "uses_batch_stats",
    "validate_norm",
]

NORM_NAMES = ("none", "bn", "frozen_bn", "sync_bn", "gn", "ln", "in", "gn_ws")
GN_EPS = 1e-5

NormLayer = Callable[[int], nn.Module]


def validate_norm(name: str, option: str = "norm") -> str:
    """Return ``name`` if it is a known norm, else raise ``ValueError`` naming ``option``."""
    if name not in NORM_NAMES:
        raise ValueError(
            f"{option}: unknown norm {name!r}; valid names are {', '.join(NORM_NAMES)}"
        )
    return name


def _group_norm(
    num_channels: int, *, groups: int | None, channels_per_group: int | None
) -> nn.GroupNorm:
    """``nn.GroupNorm`` over ``num_channels``; exactly one of the two group sizes is set."""
    if channels_per_group is not None:
        if num_channels % channels_per_group:
            raise ValueError(
                f"GroupNorm: {num_channels} channels are not divisible by "
                f"{channels_per_group} channels per group"
            )
        groups = num_channels // channels_per_group
    elif groups is None:  # instance norm: one group per channel
        groups = num_channels
    if num_channels % groups:
        raise ValueError(
            f"GroupNorm: {num_channels} channels are not divisible by {groups} groups; "
            "choose a group count that divides every channel width (e.g. 32, 16, 8, 1)"
        )
    return nn.GroupNorm(groups, num_channels, eps=GN_EPS)


def norm_layer(
    name: str, *, groups: int = 32, channels_per_group: int | None = None
) -> NormLayer | None:
    """Callable ``num_channels -> nn.Module`` for the norm ``name``, or ``None`` for ``"none"``.

    ``groups`` (default 32) and ``channels_per_group`` apply to ``gn`` and ``gn_ws``;
    ``channels_per_group`` wins when given. The callable raises ``ValueError`` when the
    channel count is not divisible. The result is a ``functools.partial`` (or a class),
    so models built with it pickle.
    """
    validate_norm(name)
    for label, value in (("groups", groups), ("channels_per_group", channels_per_group)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if name == "none":
        return None
    if name == "bn":
        return nn.BatchNorm2d
    if name == "frozen_bn":
        return FrozenBatchNorm2d
    if name == "sync_bn":
        return SyncBatchNorm
    if name == "ln":
        return functools.partial(_group_norm, groups=1, channels_per_group=None)
    if name == "in":
        return functools.partial(_group_norm, groups=None, channels_per_group=None)
    # gn and gn_ws
    return functools.partial(_group_norm, groups=groups, channels_per_group=channels_per_group)


# Norms with nothing to learn: they need statistics from pretraining, which only the backbone has.
_NEEDS_PRETRAINED_STATS = frozenset({"frozen_bn"})


def default_for_component(name: str, *, pretrained_stats: bool) -> str:
    """The norm a component gets when ``name`` is the model-wide default.

    ``frozen_bn`` freezes statistics learned in pretraining; in a randomly initialized part
    (FPN, box head, mask head) it would be an identity map that only removes the conv bias.
    So as a model-wide default it applies where ``pretrained_stats`` is true (the backbone)
    and leaves the other parts without a norm: the BN* layout of the GN paper and of
    torchvision's ``maskrcnn_resnet50_fpn``. A component that names ``frozen_bn`` itself
    still gets it.
    """
    validate_norm(name)
    return name if pretrained_stats or name not in _NEEDS_PRETRAINED_STATS else "none"


def describe_norm(name: str, *, groups: int = 32, channels_per_group: int | None = None) -> str:
    """Human-readable description, e.g. ``"gn (32 groups)"``, for the CLI's norm table."""
    validate_norm(name)
    if name in ("gn", "gn_ws"):
        size = f"{channels_per_group} ch/group" if channels_per_group else f"{groups} groups"
        return f"{name} ({size})"
    return {"ln": "ln (gn, 1 group)", "in": "in (gn, 1 group per channel)"}.get(name, name)


def uses_batch_stats(name: str) -> bool:
    """True when the norm normalizes with batch statistics in training (PreciseBN applies)."""
    return validate_norm(name) in ("bn", "sync_bn")


class WSConv2d(nn.Conv2d):
    """Conv2d with weight standardization (Qiao et al., 2019).

    Each output filter ``w[o]`` (shape ``(C_in/groups, kH, kW)``) is standardized to zero
    mean and unit variance before the convolution: ``(w - mean) / sqrt(var + eps)``.
    Parameters and state_dict keys are those of ``nn.Conv2d``.
    """

    ws_eps = 1e-5

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        flat = w.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        var = flat.var(dim=1, unbiased=False).view(-1, 1, 1, 1)
        return (w - mean) / torch.sqrt(var + self.ws_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x,
            self.standardized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


def _replace_modules(
    module: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """Replace every submodule for which ``match`` holds by ``make(old)``; return the root."""
    if match(module):
        return make(module)
    for child_name, child in module.named_children():
        new = _replace_modules(child, match, make)
        if new is not child:
            setattr(module, child_name, new)
    return module


def _to_ws_conv(conv: nn.Conv2d) -> WSConv2d:
    new = WSConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    new.load_state_dict(conv.state_dict())
    new.weight.requires_grad_(conv.weight.requires_grad)
    return new


def _is_plain_conv(module: nn.Module) -> bool:
    return type(module) is nn.Conv2d


def convert_ws_conv(module: nn.Module) -> nn.Module:
    """Turn every ``nn.Conv2d`` in ``module`` into a :class:`WSConv2d` with the same weights."""
    return _replace_modules(module, _is_plain_conv, _to_ws_conv)


_CONV_RULES: dict[str, Callable[[nn.Module], nn.Module]] = {"gn_ws": convert_ws_conv}


def finalize_component(module: nn.Module, name: str) -> nn.Module:
    """Apply the conv rule of norm ``name`` to a component built with :func:`norm_layer`."""
    rule = _CONV_RULES.get(validate_norm(name))
    return rule(module) if rule is not None else module


def _to_frozen(bn: _BatchNorm) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen.to(bn.running_mean.device if bn.running_mean is not None else "cpu")


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm)


def _is_plain_bn(module: nn.Module) -> bool:
    return type(module) is nn.BatchNorm2d


def convert_frozen_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm (bn or sync_bn) in ``module`` by FrozenBN with its statistics."""
    return _replace_modules(module, _is_batchnorm, _to_frozen)


def convert_sync_bn(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every plain ``BatchNorm2d`` in ``module`` by detnorm's :class:`SyncBatchNorm`.

    Unlike ``Trainer(sync_batchnorm=True)`` this touches only the tree it is given, so a
    caller can convert one component and leave the others alone.
    """
    return _replace_modules(
        module,
        _is_plain_bn,
        functools.partial(SyncBatchNorm.from_batchnorm, process_group=process_group),
    )


def is_norm_module(module: nn.Module) -> bool:
    """True for BN (any flavour), FrozenBN, GroupNorm, LayerNorm and InstanceNorm modules."""
    return isinstance(module, (_NormBase, FrozenBatchNorm2d, nn.GroupNorm, nn.LayerNorm))


def batchnorm_modules(model: nn.Module) -> list[_BatchNorm]:
    """BN modules that update running statistics in training (bn and sync_bn): PreciseBN's set."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _norm_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    for module in model.modules():
        if is_norm_module(module):
            yield from module.parameters(recurse=False)


def param_groups(
    model: nn.Module, *, weight_decay: float, norm_weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer parameter groups: norm parameters get ``norm_weight_decay`` (0 by default).

    Every trainable parameter appears exactly once (shared parameters are counted once);
    frozen parameters (``requires_grad=False``) are left out. Groups carry a ``"name"`` key
    (``"default"`` or ``"norm"``) and empty groups are dropped.
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
