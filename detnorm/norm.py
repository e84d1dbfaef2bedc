"""Old import path of :mod:`detnorm.layers.norm` (``from detnorm.norm import norm_layer``)."""

from detnorm.layers.norm import *  # noqa: F403
from detnorm.layers.norm import __all__  # noqa: F401
