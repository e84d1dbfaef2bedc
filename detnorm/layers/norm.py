"""The norm vocabulary: the only place where norm names become modules.

Every component of the model (backbone, FPN, box head, mask head) takes a norm *name*
from :data:`NORM_NAMES` and is built in one step by :func:`build_with_norm`: the component's
builder receives the norm layer (a picklable callable ``num_channels -> nn.Module``, or ``None``
for ``"none"``) and the norm's rule for convolutions (weight standardization for ``gn_ws``) is
applied to what it returns. No call site can forget the rule, and model code never branches on a
name. :func:`norm_layer` alone gives the layer without the rule (for inspection, e.g. of group
counts).

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

Errors are :class:`detnorm.errors.ConfigError` with the config key at fault: ``"gn_groups"`` for
a group count that is not a positive integer or does not divide a width, the caller's key
(``"norm"`` by default, ``"fpn_norm"``, ...) for an unknown name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.errors import ConfigError, check_int
from detnorm.layers import ws_conv
from detnorm.layers.replace import replace_modules
from detnorm.layers.sync_bn import SyncBatchNorm

__all__ = [
    "NORM_NAMES",
    "FrozenBatchNorm2d",
    "SyncBatchNorm",
    "batchnorm_modules",
    "build_with_norm",
    "convert_frozen_bn",
    "convert_sync_bn",
    "default_for_component",
    "describe_norm",
    "is_norm_module",
    "norm_layer",
    "uses_batch_stats",
    "validate_norm",
]

NORM_NAMES = ("none", "bn", "frozen_bn", "sync_bn", "gn", "ln", "in", "gn_ws")
GN_EPS = 1e-5

NormLayer = Callable[[int], nn.Module]


def validate_norm(name: str, key: str = "norm") -> str:
    """Return ``name`` if it is a known norm, else raise ``ConfigError`` with ``key``."""
    if name not in NORM_NAMES:
        raise ConfigError(key, f"unknown norm {name!r}; valid names are {', '.join(NORM_NAMES)}")
    return name


def _group_norm(
    num_channels: int, *, groups: int | None, channels_per_group: int | None
) -> nn.GroupNorm:
    """``nn.GroupNorm`` over ``num_channels``; exactly one of the two group sizes is set."""
    if channels_per_group is not None:
        if num_channels % channels_per_group:
            raise ConfigError(
                "channels_per_group",
                f"{num_channels} channels are not divisible by {channels_per_group} channels "
                "per group; choose a size that divides every channel width",
            )
        groups = num_channels // channels_per_group
    elif groups is None:  # instance norm: one group per channel
        groups = num_channels
    if num_channels % groups:
        raise ConfigError(
            "gn_groups",
            f"{num_channels} channels are not divisible by {groups} groups; "
            "choose a group count that divides every channel width (e.g. 32, 16, 8, 1)",
        )
    return nn.GroupNorm(groups, num_channels, eps=GN_EPS)


def norm_layer(
    name: str, *, groups: int = 32, channels_per_group: int | None = None
) -> NormLayer | None:
    """Callable ``num_channels -> nn.Module`` for the norm ``name``, or ``None`` for ``"none"``.

    ``groups`` (default 32) and ``channels_per_group`` apply to ``gn`` and ``gn_ws``;
    ``channels_per_group`` wins when given. The callable raises ``ConfigError`` (key
    ``"gn_groups"``) when the channel count is not divisible. The result is a
    ``functools.partial`` (or a class), so models built with it pickle. This is the layer only:
    build components with :func:`build_with_norm`, which also applies the norm's conv rule.
    """
    validate_norm(name)
    check_int("gn_groups", groups, 1)
    if channels_per_group is not None:
        check_int("channels_per_group", channels_per_group, 1)
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


# The rule for a component's convolutions, by norm; norms not listed leave them alone.
_CONV_RULES: dict[str, Callable[[nn.Module], nn.Module]] = {"gn_ws": ws_conv.convert_ws_conv}


def build_with_norm(
    name: str,
    build: Callable[[NormLayer | None], nn.Module],
    *,
    groups: int = 32,
    channels_per_group: int | None = None,
) -> nn.Module:
    """Build one component with norm ``name``: ``build(norm_layer(name, ...))``, then its conv rule.

    ``build`` receives the norm layer (``None`` for ``"none"``) and returns the component; a
    ``functools.partial`` of a keyword-only builder keeps call sites declarative. The norm's rule
    for convolutions is applied to the result (``gn_ws``: every ``nn.Conv2d`` becomes a
    weight-standardized :class:`~detnorm.layers.ws_conv.WSConv2d`), so a component never has a
    norm without its rule. Raises ``ConfigError`` as :func:`norm_layer` does.
    """
    module = build(norm_layer(name, groups=groups, channels_per_group=channels_per_group))
    rule = _CONV_RULES.get(name)
    return rule(module) if rule is not None else module


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
    return replace_modules(module, _is_batchnorm, _to_frozen)


def convert_sync_bn(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every plain ``BatchNorm2d`` in ``module`` by detnorm's :class:`SyncBatchNorm`.

    Unlike ``Trainer(sync_batchnorm=True)`` this touches only the tree it is given, so a
    caller can convert one component and leave the others alone.
    """
    return replace_modules(
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
