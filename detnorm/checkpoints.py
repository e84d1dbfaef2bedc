"""Finding and reading weights files: aliases, cached downloads, format detection.

A weights *source* is a local file, an http(s) URL, or an alias from :data:`WEIGHT_ALIASES`.
URLs are downloaded once into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) and read
from there afterwards; nothing touches the network when the file is cached. A file is one of
:data:`FORMATS`:

* ``torchvision_resnet``: an ImageNet ResNet state_dict (``conv1.weight``, ``layer1.*``, ``fc.*``);
* ``torchvision_maskrcnn``: a Mask R-CNN state_dict (``backbone.body.*``, ``roi_heads.*``), bare or
  under ``"model"`` / ``"state_dict"``, with or without DDP's ``module.`` prefix;
* ``caffe2``: a Detectron ``.pkl`` of numpy blobs (see :mod:`detnorm.caffe2`);
* ``detnorm``: a Lightning checkpoint whose ``state_dict`` keys start with ``model.``.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import resnet
from torchvision.models.detection import (
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)

from detnorm import caffe2

__all__ = [
    "FORMATS",
    "WEIGHT_ALIASES",
    "WeightsError",
    "cached_download",
    "detect_format",
    "read_weights",
    "resolve_source",
]

FORMATS = ("torchvision_resnet", "torchvision_maskrcnn", "caffe2", "detnorm")
WEIGHT_ALIASES = {
    "imagenet": "torchvision ImageNet ResNet (IMAGENET1K_V1) of the model's depth",
    "coco": "torchvision maskrcnn_resnet50_fpn COCO_V1 (R-50 only)",
    "coco_v2": "torchvision maskrcnn_resnet50_fpn_v2 COCO_V1 (R-50 only)",
}
_IMAGENET = {18: resnet.ResNet18_Weights, 34: resnet.ResNet34_Weights,
             50: resnet.ResNet50_Weights, 101: resnet.ResNet101_Weights}  # fmt: skip


class WeightsError(ValueError):
    """A weights file that cannot be found, read, or loaded into the model."""


def _alias_url(alias: str, depth: int | None) -> str:
    if alias == "imagenet":
        if depth not in _IMAGENET:
            raise WeightsError(f"'imagenet' needs a ResNet depth in {list(_IMAGENET)}, got {depth}")
        return _IMAGENET[depth].IMAGENET1K_V1.url
    if depth not in (None, 50):
        raise WeightsError(f"weights {alias!r} are an R-50 Mask R-CNN; the model is R-{depth}")
    weights = MaskRCNN_ResNet50_FPN_Weights if alias == "coco" else MaskRCNN_ResNet50_FPN_V2_Weights
    return weights.COCO_V1.url


def cached_download(url: str) -> Path:
    """Local copy of ``url`` in torch.hub's cache; downloads only when it is not cached."""
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    digest = re.search(r"-([a-f0-9]+)\.", filename)
    try:
        torch.hub.download_url_to_file(url, str(cached), digest.group(1) if digest else None)
    except (OSError, RuntimeError) as e:
        raise WeightsError(
            f"could not download {url} ({e}). Offline? Download it on a machine with network "
            f"access and place it at {cached}, or pass the local file's path instead."
        ) from e
    return cached


def resolve_source(source: str | os.PathLike, *, depth: int | None = None) -> Path:
    """A local path, an alias from ``WEIGHT_ALIASES``, or an http(s) URL -> a local file.

    ``depth`` is the model's ResNet depth, which picks the ``"imagenet"`` file.
    """
    text = os.fspath(source)
    if text in WEIGHT_ALIASES:
        return cached_download(_alias_url(text, depth))
    if urlparse(text).scheme in ("http", "https"):
        return cached_download(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path} (a source is a file, an http(s) URL, or one of "
            f"{', '.join(WEIGHT_ALIASES)})"
        )
    return path


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; a zip checkpoint that also pickles Python
    objects (e.g. Lightning hyper-parameters) is then loaded in full, as a trusted file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):
            raise WeightsError(
                f"{path}: neither a torch checkpoint nor a Detectron .pkl of numpy blobs"
            ) from e
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ...
        raise WeightsError(f"{path}: not a readable torch checkpoint ({e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path}: not a readable torch checkpoint ({e})") from e


def _strip(state: dict, prefix: str) -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_weights(path: Path) -> tuple[str, dict, list[str], dict]:
    """``(format, payload, ignored keys, hyper-parameters)``; payload: state_dict or Caffe2 blobs.

    Hyper-parameters come from detnorm (Lightning) checkpoints; ``input_format`` and
    ``stride_in_1x1`` there tell how the saved model read its input.
    """
    if not zipfile.is_zipfile(path):
        blobs = caffe2.read_caffe2_pickle(path)
        if blobs is not None:
            return "caffe2", blobs, [], {}
    obj = _torch_load(path)
    ignored: list[str] = []
    state = obj
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        if any(k.startswith("model.") for k in state):
            ignored = [k for k in state if not k.startswith("model.")]
            model_state = {
                k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")
            }
            hparams = obj.get("hyper_parameters")
            return (
                "detnorm",
                model_state,
                ignored,
                dict(hparams) if isinstance(hparams, dict) else {},
            )
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state = obj["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path}: holds no state_dict of tensors; expected one of {', '.join(FORMATS)}"
        )
    state = _strip(dict(state), "module.")
    if any(k.startswith(("backbone.body.", "roi_heads.")) for k in state):
        return "torchvision_maskrcnn", state, ignored, {}
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        return "torchvision_resnet", state, ignored, {}
    raise WeightsError(
        f"{path}: unrecognized state_dict (first keys: {', '.join(list(state)[:4])}); "
        f"expected one of {', '.join(FORMATS)}"
    )


def detect_format(path: str | os.PathLike) -> str:
    """One of :data:`FORMATS` for a local weights file; ``WeightsError`` if none fits."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return read_weights(path)[0]
