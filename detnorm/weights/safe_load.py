"""Finding and reading weights files: aliases, cached downloads, format detection.

A weights *source* is a local file, an http(s) URL, or an alias from :data:`WEIGHT_ALIASES`.
URLs are downloaded once into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) and read
from there afterwards; nothing touches the network when the file is cached. A file is one of
:data:`FORMATS`:

* ``torchvision_resnet``: an ImageNet ResNet state_dict (``conv1.weight``, ``layer1.*``, ``fc.*``);
* ``torchvision_maskrcnn``: a Mask R-CNN state_dict (``backbone.body.*``, ``roi_heads.*``), bare or
  under ``"model"`` / ``"state_dict"``, with or without DDP's ``module.`` prefix;
* ``caffe2``: a Detectron ``.pkl`` of numpy blobs (see :mod:`detnorm.weights.caffe2`);
* ``detnorm``: a Lightning checkpoint whose ``state_dict`` keys start with ``model.``.
"""

from __future__ import annotations

import contextlib
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

from detnorm.weights import caffe2

__all__ = [
    "CHECKPOINT_GLOBALS",
    "FORMATS",
    "WEIGHT_ALIASES",
    "UnsafeWeightsError",
    "WeightsError",
    "blocked_global",
    "cached_download",
    "detect_format",
    "read_weights",
    "resolve_source",
    "safe_unpickling",
    "torch_load",
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


class DownloadError(WeightsError):
    """A source that is not in torch.hub's cache and could not be downloaded."""


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
        raise DownloadError(
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


class UnsafeWeightsError(WeightsError):
    """A weights file that needs a Python global outside the allow-list to be unpickled.

    ``path`` and ``name`` (``"module.qualname"`` of the first blocked global) are attributes;
    ``str(e)`` is one line that names both and the opt-in (``--trust-weights``).
    """

    def __init__(self, path, name: str):
        super().__init__(
            f"{path}: refused to load: it needs the Python global {name}, which a file of "
            f"weights does not need and which can run code while it loads; if you trust the "
            f"file's source, --trust-weights loads it anyway"
        )
        self.path, self.name = Path(path), name


# Globals that detnorm's own checkpoints may hold besides what torch's weights_only unpickler
# allows by default (tensors, OrderedDict and other containers, numbers, strings). The Lightning
# checkpoints of DetnormModule and PretrainModule need none today: hyper-parameters are plain
# values and the LR schedules are stored as dicts (tests/test_safe_loading.py checks real ones).
# A class added here must be plain data: unpickling it must not call anything of the file's.
CHECKPOINT_GLOBALS: tuple = ()
_BLOCKED = re.compile(r"GLOBAL ([\w.]+)")


def blocked_global(error: BaseException) -> str | None:
    """The global named by torch's weights_only refusal ``error``, or ``None`` if it is not one."""
    match = _BLOCKED.search(str(error))
    return match.group(1) if match else None


@contextlib.contextmanager
def safe_unpickling(path: str | os.PathLike):
    """Run a ``torch.load(..., weights_only=True)`` of ``path`` (also one inside Lightning):
    :data:`CHECKPOINT_GLOBALS` are allowed, and a refused global becomes
    :class:`UnsafeWeightsError` naming the file and the global."""
    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
            yield
    except pickle.UnpicklingError as e:
        name = blocked_global(e)
        if name is None:
            raise
        raise UnsafeWeightsError(path, name) from None


def torch_load(
    path: str | os.PathLike, *, trust: bool = False, map_location="cpu", mmap: bool = False
) -> object:
    """The one ``torch.load`` of detnorm: ``weights_only=True`` unless ``trust``. ``mmap`` maps
    the tensors' storage instead of reading it (for a caller that needs only the plain values).

    A file whose pickle needs a global beyond torch's tensors and containers and
    :data:`CHECKPOINT_GLOBALS` raises :class:`UnsafeWeightsError` before anything of it runs;
    ``trust=True`` (``--trust-weights``) loads it in full. Other unreadable files raise
    :class:`WeightsError` naming the file.
    """
    path = Path(path)
    try:
        if trust:
            return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        with safe_unpickling(path):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except WeightsError:
        raise
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):
            raise WeightsError(
                f"{path}: neither a torch checkpoint nor a Detectron .pkl of numpy blobs"
            ) from e
        raise WeightsError(f"{path}: not a readable torch checkpoint ({e})") from e
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ...
        raise WeightsError(f"{path}: not a readable torch checkpoint ({e})") from e


def _strip(state: dict, prefix: str) -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_weights(
    path: Path, *, trust: bool = False, prefix: str | None = None
) -> tuple[str, dict, list[str], dict]:
    """``(format, payload, ignored keys, hyper-parameters)``; payload: state_dict or Caffe2 blobs.

    Hyper-parameters come from detnorm (Lightning) checkpoints; ``input_format`` and
    ``stride_in_1x1`` there tell how the saved model read its input. A model found inside a
    wrapped file (:func:`detnorm.weights.prefixes.locate_model`; ``prefix`` chooses the key prefix)
    gives ``{"key_prefix": P}`` instead. Nothing in the file runs
    unless ``trust`` (see :func:`torch_load`; Detectron pickles: ``caffe2.read_caffe2_pickle``).
    """
    if not zipfile.is_zipfile(path):
        try:
            blobs = caffe2.read_caffe2_pickle(path, trust=trust)
        except caffe2.BlockedGlobal as e:  # not blobs; maybe a legacy torch file, else refused
            try:
                obj = torch_load(path)
            except UnsafeWeightsError:
                raise
            except WeightsError:
                raise UnsafeWeightsError(path, e.name) from None
            return _classify(path, obj, prefix)
        if blobs is not None:
            return "caffe2", blobs, [], {}
    return _classify(path, torch_load(path, trust=trust), prefix)


def _classify(
    path: Path, obj: object, prefix: str | None = None
) -> tuple[str, dict, list[str], dict]:
    from detnorm.weights.prefixes import locate_model

    if prefix is not None:
        return locate_model(path, obj, prefix)
    ignored: list[str] = []
    state = obj
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        if any(k.startswith("model.backbone.body.") for k in state):
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
        return locate_model(path, obj)  # e.g. weights beside optimizer state or an EMA copy
    state = _strip(dict(state), "module.")
    if any(k.startswith(("backbone.body.", "roi_heads.")) for k in state):
        return "torchvision_maskrcnn", state, ignored, {}
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        return "torchvision_resnet", state, ignored, {}
    return locate_model(path, obj)  # under another prefix, or unrecognized


def detect_format(path: str | os.PathLike, *, trust: bool = False) -> str:
    """One of :data:`FORMATS` for a local weights file; ``WeightsError`` if none fits."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return read_weights(path, trust=trust)[0]
