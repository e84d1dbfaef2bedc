"""Foreign weights and their formats: torchvision, Detectron/Caffe2, prefixed and wrapped files.

* :mod:`~detnorm.weights.load`: :func:`load_weights`, the public entry point (re-exported here);
* :mod:`~detnorm.weights.safe_load`: sources (files, URLs, aliases, cached downloads), the one
  ``torch.load`` (``torch_load``, which never runs code from a file unless trusted), format
  detection and ``read_weights``;
* :mod:`~detnorm.weights.norm_checks`: refusals of weights whose norms cannot fit the backbone;
* :mod:`~detnorm.weights.torchvision`: torchvision Mask R-CNN keys (legacy names, class layers);
* :mod:`~detnorm.weights.caffe2`: Detectron ``.pkl`` blobs -> torchvision ResNet keys;
* :mod:`~detnorm.weights.prefixes`: a model found inside a wrapped file by its key prefix.

Loading a whole detnorm training checkpoint as a ``DetnormModule`` is the engine's
(``detnorm.engine.checkpoint_io.load_detnorm_module``).
"""

from detnorm.weights.load import load_weights

__all__ = ["load_weights"]
