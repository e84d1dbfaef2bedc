"""Foreign weights and their formats: torchvision, Detectron/Caffe2, prefixed and wrapped files.

``detnorm.weights.load_weights`` (the public entry point) lives in :mod:`detnorm.weights.load`.
"""

from detnorm.weights.load import load_weights

__all__ = ["load_weights"]
