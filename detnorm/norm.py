"""Old import path of the norm vocabulary (``from detnorm.norm import norm_layer``).

Re-exports :mod:`detnorm.layers.norm` and the names that lived here before the redesign:
``WSConv2d``/``convert_ws_conv`` (now :mod:`detnorm.layers.ws_conv`) and ``param_groups`` (now
:mod:`detnorm.solver.param_groups`). New code imports from those modules.
"""

from detnorm.layers.norm import *  # noqa: F403
from detnorm.layers.norm import __all__ as _norm_all
from detnorm.layers.ws_conv import WSConv2d, convert_ws_conv
from detnorm.solver.param_groups import param_groups

__all__ = [*_norm_all, "WSConv2d", "convert_ws_conv", "param_groups"]
