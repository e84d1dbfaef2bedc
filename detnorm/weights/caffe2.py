"""Detectron (Caffe2) ImageNet ResNet ``.pkl`` files -> torchvision ResNet state_dicts.

A Detectron weights file is a pickle (often written by Python 2: read with latin1) holding a
dict with ``"blobs"``: blob name -> numpy array (some files are the bare blob dict). Two kinds
of ResNets are published:

* GN models (``R-50-GN.pkl``, ``R-101-GN.pkl``): ``conv1_w``, ``conv1_gn_s``/``_b``,
  ``res{2..5}_{i}_branch2{a,b,c}_w`` + ``_gn_s``/``_gn_b``, shortcut ``res{2..5}_0_branch1_w``
  + ``_gn_s``/``_gn_b``. Stride in the 3x3 conv, as torchvision.
* BN* models (MSRA ``R-50.pkl``, ``R-101.pkl``): the same names with ``_bn_s``/``_bn_b``
  (AffineChannel: ``y = x * s + b``) and ``res_conv1_bn_s``/``_b`` for the stem. Stride in
  the 1x1 conv.

Name mapping (stage ``res{k}`` is torchvision's ``layer{k-1}``; ``branch2a/b/c`` are
``conv1/2/3`` with ``bn1/2/3``; ``branch1`` is ``downsample.0`` with ``downsample.1``;
``_w`` -> ``.weight``, ``_s`` -> norm ``.weight``, ``_b`` -> norm ``.bias``). The classifier
(``fc1000_*``, ``pred_*``) and solver state (``*_momentum``) are ignored.

All arrays are in Caffe2's layout, which is torch's (conv weights ``(out, in, kH, kW)``),
and the first conv expects BGR input in [0, 255] minus Detectron's pixel means.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "BlockedGlobal",
    "blob_kind",
    "caffe2_to_torchvision",
    "read_caffe2_pickle",
    "torchvision_key",
]

IGNORED_BLOB = re.compile(r"^(fc1000|pred)_[wb]$|_momentum$")
_STEM_NORM = re.compile(r"^(?:conv1_gn|res_conv1_bn)_([sb])$")
_BLOCK = re.compile(r"^res([2-5])_(\d+)_branch(1|2[abc])_(?:w|(gn|bn)_([sb]))$")
_BRANCH = {"1": ("downsample.0", "downsample.1"), "2a": ("conv1", "bn1"),
           "2b": ("conv2", "bn2"), "2c": ("conv3", "bn3")}  # fmt: skip
_PARAM = {"s": "weight", "b": "bias"}

# Globals a blob pickle may reference: numpy arrays, dtypes and scalars, dicts, bytes. Lists,
# str, int and float need no global. Nothing here can run code while it is unpickled.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class BlockedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list; ``name`` is ``"module.qualname"``."""

    def __init__(self, name: str):
        super().__init__(f"global {name} is not allowed in a blob pickle")
        self.name = name


class _BlobUnpickler(pickle.Unpickler):
    """Unpickler that refuses anything but numpy arrays and dicts (no code execution)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise BlockedGlobal(f"{module}.{name}")


def read_caffe2_pickle(path: str | Path, *, trust: bool = False) -> dict[str, np.ndarray] | None:
    """Blob dict of a Detectron ``.pkl``, or ``None`` if ``path`` is not such a pickle.

    The pickle is read with an unpickler that allows only numpy arrays, dtypes, scalars, dicts
    and lists; one that names any other global raises :class:`BlockedGlobal` before anything of
    it runs. ``trust=True`` reads it with the plain unpickler instead (it may then run code).
    """
    unpickler = pickle.Unpickler if trust else _BlobUnpickler
    try:
        with open(path, "rb") as f:
            data = unpickler(f, encoding="latin1").load()
    except BlockedGlobal:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError):
        return None
    except Exception:  # noqa: BLE001 - trusted pickles may raise anything; not blobs then
        if not trust:
            raise
        return None
    if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        data = data["blobs"]
    if not isinstance(data, dict) or not data:
        return None
    if not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in data.items()):
        return None
    return data


def torchvision_key(blob: str) -> tuple[str, bool] | None:
    """Torchvision ResNet key of a Caffe2 blob and whether it is an AffineChannel (BN*) norm.

    ``None`` when the blob is not part of a ResNet body (or is ignored, see ``IGNORED_BLOB``).
    """
    if blob == "conv1_w":
        return "conv1.weight", False
    m = _STEM_NORM.match(blob)
    if m:
        return f"bn1.{_PARAM[m.group(1)]}", blob.startswith("res_conv1_bn")
    m = _BLOCK.match(blob)
    if not m:
        return None
    stage, index, branch, norm, param = m.groups()
    conv, bn = _BRANCH[branch]
    prefix = f"layer{int(stage) - 1}.{int(index)}"
    if norm is None:
        return f"{prefix}.{conv}.weight", False
    return f"{prefix}.{bn}.{_PARAM[param]}", norm == "bn"


def blob_kind(blobs: dict[str, np.ndarray]) -> str:
    """``"gn"`` for Detectron's GN models, ``"affine"`` for BN* (AffineChannel) models."""
    gn = any(re.search(r"_gn_[sb]$", b) for b in blobs)
    affine = any(re.search(r"_bn_[sb]$", b) for b in blobs)
    if gn == affine:
        raise ValueError("the blobs hold both or neither of GN (_gn_s) and AffineChannel (_bn_s)")
    return "gn" if gn else "affine"


def caffe2_to_torchvision(
    blobs: dict[str, np.ndarray], body: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map blobs to a state_dict for ``body`` (a torchvision ResNet or its FPN body).

    AffineChannel norms (``y = x * s + b``) become BN-like layers with ``weight = s``,
    ``bias = b``, ``running_mean = 0`` and ``running_var = 1 - eps`` (the target layer's
    eps), so ``(running_var + eps) ** -0.5 == 1`` and the layer computes ``x * s + b``.

    Returns ``(state_dict, unexpected, ignored)``: blobs that map to no ResNet key, and blobs
    deliberately skipped (classifier, momentum).
    """
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    ignored: list[str] = []
    modules = dict(body.named_modules())
    for name, array in blobs.items():
        if IGNORED_BLOB.search(name):
            ignored.append(name)
            continue
        mapped = torchvision_key(name)
        if mapped is None:
            unexpected.append(name)
            continue
        key, affine = mapped
        state[key] = torch.from_numpy(np.ascontiguousarray(array)).float()
        owner = modules.get(key.rsplit(".", 1)[0])
        if affine and owner is not None and hasattr(owner, "running_var"):
            eps = float(owner.eps)
            prefix = key.rsplit(".", 1)[0]
            channels = array.shape[0]
            state[f"{prefix}.running_mean"] = torch.zeros(channels)
            state[f"{prefix}.running_var"] = torch.full(
                (channels,), 1.0 - eps, dtype=torch.float64
            ).float()
    return state, unexpected, ignored
