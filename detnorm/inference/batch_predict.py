"""Predict on many images and write COCO results: the work behind ``tools/predict.py``.

Images come from files and folders (image ids 1..N in sorted order) or from a COCO annotation
file (``--ann``: its image ids, so the results score against that ground truth). The output
folder receives, each written atomically:

* ``predictions_bbox.json``: COCO results, ``{"image_id", "category_id", "bbox": [x, y, w, h]
  (absolute pixels of the original image), "score"}``;
* ``predictions_segm.json``: the same detections with ``"segmentation"`` (RLE, str counts);
* ``images.json``: the COCO ``images`` list (``id``, ``file_name``, ``width``, ``height``) that
  the ids refer to;
* with ``vis``: one PNG per image with masks, boxes and labels drawn.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from detnorm.analysis import visualize
from detnorm.data.image_io import read_image
from detnorm.io import read_json, write_json_atomic

__all__ = ["PredictItem", "items_from_ann", "items_from_inputs", "run_predictions"]

RESULT_FILES = {"bbox": "predictions_bbox.json", "segm": "predictions_segm.json"}


@dataclass
class PredictItem:
    """One image to predict: its COCO id, its file, and where its PNG goes (``--vis``)."""

    image_id: int
    source: Path
    png: Path
    file_name: str


def items_from_inputs(
    inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike
) -> list[PredictItem]:
    """Files and folders (searched recursively) -> items with ids 1..N; ``ValueError`` names a
    missing path, a non-image file or two inputs that would write the same PNG."""
    pairs = visualize.collect_images(inputs, output_dir)
    out = Path(output_dir)
    return [
        PredictItem(i, src, dst, dst.relative_to(out).with_suffix(src.suffix).as_posix())
        for i, (src, dst) in enumerate(pairs, start=1)
    ]


def default_image_dir(ann: Path) -> Path | None:
    """``ROOT/images`` for ``ROOT/annotations/X.json`` (detnorm layout), ``ROOT/val2017`` for
    COCO's ``instances_val2017.json``; None when that folder does not exist."""
    root = ann.resolve().parent.parent
    stem = ann.stem
    guess = root / stem.split("_", 1)[1] if stem.startswith("instances_") else root / "images"
    return guess if guess.is_dir() else None


def items_from_ann(
    ann: str | os.PathLike, images: str | os.PathLike | None, output_dir: str | os.PathLike
) -> list[PredictItem]:
    """The images of a COCO file, with its ids; ``file_name`` is relative to ``images``.

    ``ValueError`` names the file and the image id for a malformed entry or a missing image.
    """
    ann = Path(ann)
    data = read_json(ann, "--ann")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"--ann {ann}: has no 'images' list (COCO format)")
    root = Path(images) if images is not None else default_image_dir(ann)
    if root is None or not root.is_dir():
        raise ValueError(
            f"--images: folder not found: {root}" if root is not None else
            f"--images: required with --ann {ann} (the folder that its file_name entries are in)"
        )  # fmt: skip
    items = []
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise ValueError(f"--ann {ann}: image entry {img!r:.80} lacks 'id' or 'file_name'")
        src = root / img["file_name"]
        if not src.is_file():
            raise ValueError(f"--ann {ann}: image id {img['id']}: file {src} does not exist")
        png = Path(output_dir) / Path(img["file_name"]).with_suffix(".png")
        if png.resolve() == src.resolve():
            raise ValueError(f"--output-dir: {png} would overwrite the input image; choose another")
        items.append(PredictItem(int(img["id"]), src, png, str(img["file_name"])))
    if not items:
        raise ValueError(f"--ann {ann}: lists no images")
    return items


def _draw(image, prediction, names, dst: Path, score_threshold: float, min_side: int) -> None:
    from PIL import Image

    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    instances = {"boxes": prediction.boxes, "labels": prediction.labels,
                 "scores": prediction.scores, "masks": prediction.masks}  # fmt: skip
    big, shown = visualize.upscale(
        chw, instances, visualize.upscale_factor(*image.shape[:2], min_side)
    )
    drawn = visualize.draw_predictions(big, shown, names, score_threshold=score_threshold)
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(dst)


def run_predictions(
    predictor,
    items: Sequence[PredictItem],
    output_dir: str | os.PathLike,
    *,
    vis: bool = False,
    min_side: int = 0,
    progress: bool = True,
    log: Callable[[str], object] = tqdm.write,
) -> dict[str, Path]:
    """Predict ``items`` with a :class:`detnorm.Predictor` and write the files of the module doc.

    Images are read and predicted in chunks of ``predictor.batch_size``; a tqdm bar counts
    images on stderr. Returns ``{"bbox": path, "segm": path, "images": path}``.
    """
    out = Path(output_dir)
    results: dict[str, list[dict]] = {"bbox": [], "segm": []}
    images: list[dict] = []
    step = predictor.batch_size
    with tqdm(total=len(items), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            arrays = [read_image(item.source) for item in chunk]
            for item, image, pred in zip(chunk, arrays, predictor(arrays), strict=True):
                for iou_type, dets in pred.to_coco(item.image_id).items():
                    results[iou_type].extend(dets)
                height, width = image.shape[:2]
                images.append({"id": item.image_id, "file_name": item.file_name,
                               "width": int(width), "height": int(height)})  # fmt: skip
                if vis:
                    _draw(image, pred, predictor.category_names, item.png,
                          predictor.score_threshold, min_side)  # fmt: skip
                    log(f"{item.source} -> {item.png}: {len(pred)} detection(s) with score "
                        f">= {predictor.score_threshold:g}")  # fmt: skip
            bar.update(len(chunk))
    written = {t: write_json_atomic(out / name, results[t]) for t, name in RESULT_FILES.items()}
    written["images"] = write_json_atomic(out / "images.json", images)
    log(f"wrote {len(results['bbox'])} detection(s) on {len(images)} image(s) to "
        f"{written['bbox']} and {written['segm'].name}")  # fmt: skip
    return written
