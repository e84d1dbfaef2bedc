"""Swap submodules in place: the one tree walk behind every ``convert_*`` of :mod:`detnorm.layers`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["replace_modules"]


def replace_modules(
    module: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """Replace every submodule for which ``match`` holds by ``make(old)``; return the root.

    The root itself is replaced (and returned) when it matches; a matched module's children are
    not visited. Replaced children keep their names and their place among their siblings, so
    ``state_dict`` keys and their order are unchanged.
    """
    if match(module):
        return make(module)
    for child_name, child in module.named_children():
        new = replace_modules(child, match, make)
        if new is not child:
            setattr(module, child_name, new)
    return module
