"""TorchScript and ONNX export of a detnorm Mask R-CNN, and running the exported files.

Both exporters start from :func:`deployable`, an eval-mode copy of the model with three
changes that leave its outputs as they are:

* the input transform becomes :class:`DeployTransform`, the same normalization (RGB or Caffe2's
  BGR 0-255 means) and eval resize written so that TorchScript can compile it;
* ``sync_bn`` layers become ``nn.BatchNorm2d`` with the same statistics (in eval mode both
  are the same affine map of the running statistics);
* weight-standardized convolutions (``gn_ws``) become plain convolutions whose weights are the
  standardized weights, computed once: in eval mode those weights are constants.

Formats:

* ``torchscript``: ``torch.jit.script`` of the whole model (scripting keeps torchvision's
  data-dependent control flow, which tracing would freeze). The file takes what the eager model
  takes, a list of ``(3, H, W)`` float RGB tensors in ``[0, 1]``, and returns one dict per image
  with ``boxes`` ``(N, 4)`` xyxy pixels of that image, ``scores`` ``(N,)``, ``labels`` ``(N,)``
  int64 and ``masks`` ``(N, 1, H, W)`` probabilities. Load it with ``torch.jit.load``.
* ``onnx``: torch's TorchScript-based ONNX exporter (opset 17; torch.export cannot capture
  torchvision's Mask R-CNN, whose box count is data-dependent). Input ``image``: one
  ``(3, H, W)`` float RGB image in ``[0, 1]``, H and W dynamic. Outputs ``boxes``, ``scores``,
  ``labels``, ``masks`` as above. Needs ``pip install detnorm[export]`` (onnx, onnxruntime).
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detnorm.io import atomic_write
from detnorm.layers.replace import replace_modules as _replace_modules
from detnorm.layers.sync_bn import SyncBatchNorm
from detnorm.layers.ws_conv import WSConv2d
from detnorm.modeling.input_transform import INPUT_FORMATS

__all__ = [
    "EXPORT_FORMATS",
    "ONNX_OPSET",
    "OUTPUT_NAMES",
    "DeployTransform",
    "ExportError",
    "deployable",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "run_onnx",
]

EXPORT_FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")


class ExportError(ValueError):
    """An export that cannot be done; ``str(e)`` is one line saying which case and why."""


class DeployTransform(GeneralizedRCNNTransform):
    """:class:`detnorm.modeling.input_transform.DetnormTransform` in eval mode, compilable by TorchScript.

    Same normalization and resize; the input format is stored as two constants (``bgr``,
    ``scale``) instead of a lookup in a module-level table.
    """

    def __init__(self, source: GeneralizedRCNNTransform) -> None:
        super().__init__(source.min_size, source.max_size, list(source.image_mean),
                         list(source.image_std), size_divisible=source.size_divisible,
                         fixed_size=source.fixed_size)  # fmt: skip
        order, scale, _, _ = INPUT_FORMATS[getattr(source, "input_format", "rgb")]
        self.bgr = order == "bgr"
        self.scale = float(scale)

    def normalize(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` RGB in [0, 1] -> normalized ``(3, H, W)`` in the format's channel order."""
        if self.bgr:
            image = image.flip(0)
        if self.scale != 1.0:
            image = image * self.scale
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]


def _plain_bn(sync: nn.Module) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(sync.num_features, sync.eps, sync.momentum, sync.affine,
                        sync.track_running_stats)  # fmt: skip
    bn.load_state_dict(sync.state_dict())
    return bn.to(sync.weight.device if sync.weight is not None else "cpu")


@torch.no_grad()
def _folded_conv(ws: WSConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(ws.in_channels, ws.out_channels, ws.kernel_size, stride=ws.stride,
                     padding=ws.padding, dilation=ws.dilation, groups=ws.groups,
                     bias=ws.bias is not None, padding_mode=ws.padding_mode)  # fmt: skip
    conv = conv.to(device=ws.weight.device, dtype=ws.weight.dtype)
    conv.weight.copy_(ws.standardized_weight())
    if ws.bias is not None:
        conv.bias.copy_(ws.bias)
    return conv


def deployable(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a :func:`detnorm.modeling.maskrcnn.build_maskrcnn` model, ready to export."""
    if not isinstance(getattr(model, "transform", None), GeneralizedRCNNTransform):
        raise ExportError(f"expected a torchvision MaskRCNN, got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    out.transform = DeployTransform(model.transform)
    _replace_modules(out, lambda m: isinstance(m, SyncBatchNorm), _plain_bn)
    _replace_modules(out, lambda m: isinstance(m, WSConv2d), _folded_conv)
    for p in out.parameters():
        p.requires_grad_(False)
    out._has_warned = True  # scripted GeneralizedRCNN warns once that it returns a tuple
    return out.eval()


class _ScriptedDetector(nn.Module):
    """List of images in, list of detection dicts out (what eager Mask R-CNN returns)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.model(images)[1]  # scripted GeneralizedRCNN returns (losses, detections)


class _OnnxDetector(nn.Module):
    """One ``(3, H, W)`` image in, ``(boxes, scores, labels, masks)`` out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.model([image])[0]
        return out["boxes"], out["scores"], out["labels"], out["masks"]


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def export_torchscript(model: nn.Module, path: str | os.PathLike) -> Path:
    """Script ``model`` and save it atomically to ``path``; see the module doc for its I/O."""
    try:
        scripted = torch.jit.script(_ScriptedDetector(deployable(model)))
    except Exception as e:  # noqa: BLE001 - the compiler raises many types
        raise ExportError(
            f"torchscript: torch.jit.script cannot compile this model ({_one_line(e)})"
        ) from e
    return atomic_write(path, lambda f: torch.jit.save(scripted, f), binary=True)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (800, 800),
    opset: int = ONNX_OPSET,
) -> Path:
    """Export ``model`` to ONNX at ``path`` (atomically), traced on one random image of
    ``image_size`` ``(H, W)``; height and width stay dynamic. See the module doc for its I/O."""
    try:
        import onnx  # noqa: F401 - torch.onnx needs it; fail here with the install hint
    except ImportError:
        raise ExportError(
            "onnx: the onnx package is not installed; pip install 'detnorm[export]'"
        ) from None
    height, width = (int(s) for s in image_size)
    if height < 1 or width < 1:
        raise ExportError(f"--image-size: must be two positive integers, got {image_size}")
    example = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    wrapper = _OnnxDetector(deployable(model)).eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # expected while tracing torchvision's detection code; the parity tests check it
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(vision)?\.")
            torch.onnx.export(
                wrapper, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=["image"], output_names=list(OUTPUT_NAMES),
                dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
                              "scores": {0: "detections"}, "labels": {0: "detections"},
                              "masks": {0: "detections", 2: "height", 3: "width"}},
            )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(
            f"onnx: torch.onnx.export cannot export this model ({_one_line(e)})"
        ) from e
    data = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(data), binary=True)


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str,
    *,
    image_size: tuple[int, int] = (800, 800),
) -> Path:
    """:func:`export_torchscript` or :func:`export_onnx` by name (``EXPORT_FORMATS``)."""
    if fmt == "torchscript":
        return export_torchscript(model, path)
    if fmt == "onnx":
        return export_onnx(model, path, image_size=image_size)
    raise ExportError(f"--format: got {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")


def run_onnx(path: str | os.PathLike, image: Tensor) -> dict[str, Tensor]:
    """Run an exported ONNX file with onnxruntime (CPU) on one ``(3, H, W)`` image."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(
            "onnx: onnxruntime is not installed; pip install 'detnorm[export]'"
        ) from None
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {"image": image.detach().float().cpu().numpy()})
    return {
        name: torch.from_numpy(value) for name, value in zip(OUTPUT_NAMES, outputs, strict=True)
    }
