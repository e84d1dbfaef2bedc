"""Weight-standardized convolution (Qiao et al., 2019): the convolution rule of ``gn_ws``.

:func:`detnorm.layers.norm.build_with_norm` applies :func:`convert_ws_conv` to every component
built with ``gn_ws``; nothing else needs to call it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detnorm.layers.replace import replace_modules

__all__ = ["WSConv2d", "convert_ws_conv"]


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
    return replace_modules(module, _is_plain_conv, _to_ws_conv)
