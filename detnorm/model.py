"""Old import path of :mod:`detnorm.modeling.maskrcnn` (``from detnorm.model import build_maskrcnn``)."""

from detnorm.modeling.maskrcnn import *  # noqa: F403
from detnorm.modeling.maskrcnn import __all__  # noqa: F401
