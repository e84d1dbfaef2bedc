"""The setup-time image check: every image's header is read once, before training starts.

``check_images(entries)`` opens each file with PIL, reads its size and EXIF orientation, and
runs ``verify()`` (which, for PNG, checks every chunk's CRC without decompressing). It runs in
threads, with a progress bar for large sets, and caches each result by (path, size, mtime) under
:func:`cache_dir`, so a second run on the same files pays only a ``stat`` per image.

Outcomes, per image:

* unreadable (missing, empty, not an image, broken header, bad PNG CRC): collected, and the
  dataset reports all of them in one :class:`BadImagesError` (one line per file, up to
  :data:`MAX_LISTED`, then a count), or drops and counts them with ``skip_bad_images``;
* a size that differs from the annotation's ``width``/``height``: a ``BadImagesError`` naming
  the image id and both sizes, and saying whether the file's EXIF orientation tag explains it
  (the usual cause: phone photos whose annotation tool applied the rotation, while detnorm,
  like pycocotools and torchvision, reads the stored pixels).

A file that passes the header but fails to decode later (truncated JPEG data) is handled where it
is decoded (``coco.CocoInstanceDataset.__getitem__``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from detnorm.io import write_json_atomic

__all__ = [
    "MAX_LISTED",
    "BadImagesError",
    "ImageCheck",
    "cache_dir",
    "check_images",
    "probe",
    "size_mismatch",
]

log = logging.getLogger("detnorm.data")

MAX_LISTED = 20  # files named in a BadImagesError; the rest are counted
PROGRESS_FROM = 500  # uncached images from which a progress bar is shown
_CACHE_VERSION = 1
_ROTATED = {5: "transposed", 6: "rotated 90°", 7: "transversed", 8: "rotated 270°"}
_ORIENTATION = 0x0112


class BadImagesError(ValueError):
    """Images that cannot be used. ``str(e)``: one summary line, then one line per file."""

    def __init__(self, summary: str, lines: list[str]):
        shown = lines[:MAX_LISTED]
        more = [f"  ... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
        super().__init__("\n".join([summary, *shown, *more]))
        self.summary, self.lines = summary, lines


@dataclass(frozen=True)
class ImageCheck:
    """Header of one image file: ``(width, height)`` in stored pixels, EXIF orientation
    (1-8, or None), or ``error`` (why it cannot be read)."""

    width: int = 0
    height: int = 0
    orientation: int | None = None
    error: str | None = None


def cache_dir() -> Path:
    """``$DETNORM_CACHE``, else ``$XDG_CACHE_HOME/detnorm``, else ``~/.cache/detnorm``."""
    if os.environ.get("DETNORM_CACHE"):
        return Path(os.environ["DETNORM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "detnorm"


def probe(path: str) -> ImageCheck:
    """Read the header of one image file (no full decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            im.verify()  # must come right after open
        with Image.open(path) as im:
            try:
                orientation = _orientation(im)
            except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
                orientation = None
    except FileNotFoundError:
        return ImageCheck(error="file does not exist")
    except UnidentifiedImageError:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        return ImageCheck(error="empty file" if size == 0 else "not an image PIL can identify")
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for broken files
        return ImageCheck(error=f"broken file ({type(e).__name__}: {' '.join(str(e).split())})")
    return ImageCheck(int(width), int(height), int(orientation) if orientation else None)


def _orientation(im) -> int | None:
    """EXIF orientation from the header alone. (PIL's ``getexif`` on a PNG decodes the whole
    image to look for an eXIf chunk after the pixels; only one before them is read here.)"""
    from PIL import Image

    if im.format == "PNG":
        if "exif" not in im.info:
            return None
        exif = Image.Exif()
        exif.load(im.info["exif"])
        return exif.get(_ORIENTATION)
    return im.getexif().get(_ORIENTATION)


def _cache_file(ann_file: Path) -> Path:
    digest = hashlib.sha1(str(Path(ann_file).resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "image_headers" / f"{Path(ann_file).stem}-{digest}.json"


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("entries", {}) if data.get("version") == _CACHE_VERSION else {}


def check_images(
    paths: list[str], *, ann_file: Path, name: str = "dataset", cache: bool = True
) -> tuple[list[ImageCheck], int]:
    """:class:`ImageCheck` of each path (same order) and how many were read (not cached)."""
    keys: list[str | None] = []
    for path in paths:
        try:
            st = os.stat(path)
            keys.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            keys.append(None)
    cache_path = _cache_file(ann_file)
    cached = _load_cache(cache_path) if cache else {}
    results: list[ImageCheck | None] = [None] * len(paths)
    todo = []
    for i, (path, key) in enumerate(zip(paths, keys, strict=True)):
        if key is None:
            results[i] = ImageCheck(error="file does not exist")
        elif path in cached and cached[path][0] == key:
            results[i] = ImageCheck(*cached[path][1:])
        else:
            todo.append(i)
    if todo:
        from tqdm.auto import tqdm

        workers = min(16, 2 * (os.cpu_count() or 1), len(todo))
        with ThreadPoolExecutor(workers) as pool, tqdm(
            total=len(todo), desc=f"checking {name} images", unit="img",
            disable=len(todo) < PROGRESS_FROM,
        ) as bar:  # fmt: skip
            for i, result in zip(todo, pool.map(probe, [paths[i] for i in todo]), strict=True):
                results[i] = result
                bar.update()
        if cache:
            entries = {p: [k, r.width, r.height, r.orientation, r.error]
                       for p, k, r in zip(paths, keys, results, strict=True) if k is not None}  # fmt: skip
            try:
                write_json_atomic(cache_path, {"version": _CACHE_VERSION, "entries": entries})
            except OSError as e:  # a read-only home: the check just runs again next time
                log.debug("image check cache not written (%s)", e)
    return results, len(todo)


def size_mismatch(image_id, path: str, check: ImageCheck, width: int, height: int) -> str | None:
    """A line naming the image id and both sizes when the file's size is not the annotation's."""
    if (check.width, check.height) == (width, height):
        return None
    line = (f"  image id {image_id}: {path} is {check.width}x{check.height} (WxH) but the "
            f"annotation says {width}x{height}")  # fmt: skip
    rotated = _ROTATED.get(check.orientation or 1)
    if rotated and (check.height, check.width) == (width, height):
        return line + (
            f"; its EXIF orientation tag ({check.orientation}: {rotated}) explains it: the "
            "annotation has the displayed size, detnorm reads the stored pixels; save the images "
            "rotated (e.g. PIL.ImageOps.exif_transpose) so pixels and annotation agree"
        )
    if check.orientation:
        return line + f" (its EXIF orientation tag, {check.orientation}, does not explain it)"
    return line + " (the file has no EXIF orientation tag that would explain it)"


def unreadable_note(metrics: dict | None) -> str | None:
    """The report's line for evaluation images that could not be read, if any."""
    ids = (metrics or {}).get("unreadable_images")
    if not ids:
        return None
    shown = ", ".join(map(str, ids[:MAX_LISTED])) + (" ..." if len(ids) > MAX_LISTED else "")
    return (f"note: {len(ids)} evaluation image(s) could not be read and count as images with no "
            f"detections (image ids {shown})")  # fmt: skip
