"""``Predictor``: a trained detnorm checkpoint as a function from images to instances.

    from detnorm import Predictor

    predictor = Predictor.from_checkpoint("runs/gn/checkpoints/best.ckpt", score_threshold=0.5)
    for p in predictor(["a.jpg", "b.png"]):
        print(p.category_names, p.boxes, p.masks.shape)

Inputs (one item or a list, mixed freely): a file path, a ``numpy`` array ``(H, W, 3)`` RGB,
a PIL image, or a ``(3, H, W)`` tensor (float RGB in ``[0, 1]``, or uint8). Arrays and PIL
images go through the data loader's own conversion (:func:`detnorm.data.image_io.to_rgb_uint8`
and :func:`detnorm.data.transforms.image_to_tensor`): grayscale is repeated to three channels,
alpha is dropped, 16-bit and float arrays are stretched per image to 0..255.

Images of the same size run together in batches of ``batch_size``; images of other sizes run
in other batches. The model zero-pads a batch to its largest image, and that padding would enter
GroupNorm statistics, so a result never depends on which other images were passed with it; it
equals the training-time evaluation, which runs one image per batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detnorm.data.image_io import read_image, to_rgb_uint8
from detnorm.data.transforms import image_to_tensor
from detnorm.evaluation.results import MASK_THRESHOLD, predictions_to_coco

__all__ = ["Prediction", "Predictor", "to_image_tensor"]

_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
PRECISIONS = (None, "32-true", *_AUTOCAST)


@dataclass
class Prediction:
    """The detections of one image, in its original pixel coordinates, best score first.

    ``boxes`` ``(N, 4)`` float32 xyxy absolute pixels; ``scores`` ``(N,)`` float32;
    ``labels`` ``(N,)`` int64 in ``1..K``; ``category_ids`` / ``category_names``: the COCO
    category id and name of each label; ``masks`` ``(N, H, W)`` bool (mask probability > 0.5);
    ``image_size`` ``(H, W)``.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: Tensor
    category_ids: list[int] = field(default_factory=list)
    category_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return int(self.scores.numel())

    def to_coco(self, image_id: int) -> dict[str, list[dict]]:
        """``{"bbox": [...], "segm": [...]}``: COCO result dicts (xywh boxes; RLE with str
        ``counts``), exactly what training-time evaluation writes for the same detections."""
        labels = self.labels.tolist()
        output = {"boxes": self.boxes, "scores": self.scores, "labels": self.labels,
                  "masks": self.masks.to(torch.uint8)}  # fmt: skip
        label_to_cat = dict(zip(labels, self.category_ids, strict=True))
        return predictions_to_coco([output], [int(image_id)], label_to_cat)


def to_image_tensor(item: Any) -> Tensor:
    """One input (path, numpy array, PIL image or tensor) -> ``(3, H, W)`` float32 RGB in [0, 1].

    ``ValueError`` / ``OSError`` naming the input when it is not an image.
    """
    if isinstance(item, (str, os.PathLike)):
        return image_to_tensor(read_image(item))  # OSError naming the file
    if isinstance(item, Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise ValueError(
                f"an image tensor must be (3, H, W) RGB, got shape {tuple(item.shape)}; "
                "pass arrays as (H, W, 3) numpy"
            )
        if item.dtype == torch.uint8:
            return image_to_tensor(item.permute(1, 2, 0).cpu().numpy())
        if not item.is_floating_point():
            raise ValueError(f"an image tensor must be float in [0, 1] or uint8, got {item.dtype}")
        return item.detach().float()
    if type(item).__module__.startswith("PIL."):
        item = _pil_to_array(item)
    if isinstance(item, np.ndarray):
        try:
            return image_to_tensor(to_rgb_uint8(item))
        except ValueError as e:
            raise ValueError(
                f"numpy image: {e} (expected (H, W), (H, W, 3) or (H, W, 4))"
            ) from None
    raise ValueError(
        f"cannot read {type(item).__name__} as an image; pass a file path, a numpy (H, W, 3) "
        "array, a PIL image or a (3, H, W) tensor"
    )


def _pil_to_array(image) -> np.ndarray:
    """A PIL image as the loader's PIL decoder reads it (palette, CMYK, 16-bit handled)."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("I;16", "I;16B", "I;16L"):
        return np.array(image, dtype=np.uint16)
    elif image.mode == "CMYK":
        image = image.convert("RGB")
    return np.asarray(image)


class Predictor:
    """Runs a detnorm Mask R-CNN in eval mode; see the module docstring.

    Args:
        model: a ``MaskRCNN`` from :func:`detnorm.modeling.maskrcnn.build_maskrcnn` (put in eval mode).
        label_to_cat_id: ``{label: coco_category_id}`` for labels 1..K.
        category_names: the K category names in label order.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        score_threshold: keep detections with ``score >= score_threshold``.
        precision: ``None`` / ``"32-true"`` (float32), ``"bf16-mixed"`` or ``"16-mixed"``
            (autocast; outputs are float32).
        batch_size: images per forward pass (same-size images only, see the module doc).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        label_to_cat_id: dict[int, int],
        category_names: Sequence[str],
        *,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.5,
        precision: str | None = None,
        batch_size: int = 4,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: got {precision!r}; allowed: 32-true, bf16-mixed, 16-mixed"
            )
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.label_to_cat_id = {int(k): int(v) for k, v in label_to_cat_id.items()}
        self.category_names = list(category_names)
        self.score_threshold = float(score_threshold)
        self.precision = precision
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.5,
        precision: str | None = None,
        batch_size: int = 4,
        trust: bool = False,
    ) -> Predictor:
        """A predictor for a ``tools/train.py`` checkpoint; no config file or dataset needed.

        ``trust=True`` loads a file whose pickle holds more than tensors (it can run code)."""
        from detnorm.engine.checkpoint_io import load_detnorm_module

        module = load_detnorm_module(path, trust=trust)
        return cls(module.model, module.label_to_cat_id, module.hparams["category_names"],
                   device=device, score_threshold=score_threshold, precision=precision,
                   batch_size=batch_size)  # fmt: skip

    def __call__(self, images: Any) -> Prediction | list[Prediction]:
        """One input -> one :class:`Prediction`; a list or tuple -> a list, in input order."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        tensors = [to_image_tensor(item) for item in items]
        results: list[Prediction | None] = [None] * len(tensors)
        for indices in self._batches(tensors):
            outputs = self._forward([tensors[i] for i in indices])
            for i, out in zip(indices, outputs, strict=True):
                results[i] = self._prediction(out, tuple(tensors[i].shape[1:]))
        return results[0] if single else results

    def _batches(self, tensors: list[Tensor]) -> Iterator[list[int]]:
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            by_size.setdefault(tuple(t.shape[1:]), []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start : start + self.batch_size]

    @torch.inference_mode()
    def _forward(self, batch: list[Tensor]) -> list[dict[str, Tensor]]:
        dtype = _AUTOCAST.get(self.precision or "")
        cast = (
            torch.autocast(self.device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with cast:
            outputs = self.model([t.to(self.device) for t in batch])
        return [{k: v.detach().cpu() for k, v in o.items()} for o in outputs]

    def _prediction(self, out: dict[str, Tensor], size: tuple[int, int]) -> Prediction:
        keep = out["scores"] >= self.score_threshold
        labels = out["labels"][keep].long()
        masks = out["masks"][keep]
        masks = masks[:, 0] if masks.ndim == 4 else masks
        ids = []
        for label in labels.tolist():
            if label not in self.label_to_cat_id:
                raise ValueError(f"the model predicted label {label}, which has no category id")
            ids.append(self.label_to_cat_id[label])
        names = [
            self.category_names[lab - 1] if lab <= len(self.category_names) else str(lab)
            for lab in labels.tolist()
        ]
        return Prediction(
            boxes=out["boxes"][keep].float(),
            scores=out["scores"][keep].float(),
            labels=labels,
            masks=masks.float() > MASK_THRESHOLD,
            category_ids=ids,
            category_names=names,
            image_size=(int(size[0]), int(size[1])),
        )
