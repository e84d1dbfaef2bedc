"""Synthetic image-classification sets drawn with :mod:`detnorm.data.shapes`.

:class:`ShapeClassification` is the backbone pretraining set (one large shape per image, 64 px;
``tools/pretrain_backbone.py --synthetic``). :class:`ClutteredShapes` is the harder task of the
classification batch sweep (``reproduction/classification.py``): a narrow ResNet reaches
98-99.8 % top-1 on the first, which would hide the differences between norms.

``ClutteredShapes`` (``--synthetic --task cluttered``): 32 px images of one object whose *fill
pattern* is the class (:data:`PATTERNS`: solid, stripes at 0/45/90/135 degrees, checker, dots,
rings; period 2.5-5 px, orientation jittered by up to 10 degrees) in two random colours on a
random shape of the 6 (extent 50-90 % of the side, anywhere in the image), on a cluttered textured
background (whose lines and blobs look like stripes and dots), with 0-2 smooth blobs drawn over
the object, thin scribbles over everything, and Gaussian noise of sigma 5-25 (of 255). At this
size and noise some patterns are ambiguous (45 vs 135 degree stripes through aliasing, dots vs
checker, thin stripes under noise), so the error stays well away from 0 %. (Classifying the
*shape* of a randomly coloured object, ``label="shape"``, is learned too slowly by a narrow
ResNet for a CPU budget: 75-85 % error after 30k images, 6 classes.)

Both are pure functions of ``(seed, split, index)``: the same item is the same image in any
process or order. ``ClutteredShapes`` keeps each rendered image (uint8) in memory, so epochs
after the first only pay for the optional horizontal/vertical flip (``augment``; train split).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from detnorm.data.shapes import CLASSES

__all__ = ["ClutteredShapes", "ShapeClassification"]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """float32 (H, W, 3) in 0..255 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.clip(image, 0, 255) / 255.0).permute(2, 0, 1).float().contiguous()


class ShapeClassification(Dataset):
    """``length`` single-shape images: item ``i`` is ``((3, S, S) float RGB in [0, 1], label)``.

    The label is the shape class (``detnorm.data.shapes.CLASSES``, balanced: ``i % 6``); size,
    rotation, position, colour, texture and background clutter are random per (seed, split, i).
    """

    def __init__(self, length: int, *, image_size: int = 64, seed: int = 0, split: int = 0,
                 clutter: bool = True):  # fmt: skip
        self.length, self.size, self.seed, self.split = length, image_size, seed, split
        self.clutter = clutter
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        from detnorm.data.shapes import draw_background, draw_scribbles, paint, shape_mask

        rng = np.random.default_rng([self.seed, 100 + self.split, index])
        s = self.size
        label = index % len(self.classes)
        image = draw_background(rng, s, s, self.clutter)
        size = float(np.exp(rng.uniform(np.log(0.3 * s), np.log(0.9 * s))))
        center = rng.uniform(0.35 * s, 0.65 * s, 2)
        mask = shape_mask(rng, self.classes[label], s, s, tuple(center), size)
        paint(rng, image, mask, self.clutter)
        if self.clutter:
            draw_scribbles(rng, image)
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
        return _to_tensor(image), label


def _occluding_blob(rng: np.random.Generator, image: np.ndarray, near, reach: float) -> None:
    """A smooth irregular blob (not a class shape) in a random colour, centred within ``reach``
    pixels of ``near``."""
    from detnorm.data.shapes import _fill_polygon, _random_color

    h, w = image.shape[:2]
    a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    rad = rng.uniform(1.5, 0.12 * min(h, w)) * (1 + 0.35 * np.sin(3 * a + rng.uniform(0, 6)))
    center = np.asarray(near) + rng.uniform(-reach, reach, 2)
    blob = _fill_polygon(h, w, np.stack([rad * np.cos(a), rad * np.sin(a)], 1) + center)
    image[blob.astype(bool)] = _random_color(rng)


PATTERNS = (
    "solid",
    "stripes_0",
    "stripes_45",
    "stripes_90",
    "stripes_135",
    "checker",
    "dots",
    "rings",
)


def _pattern(rng: np.random.Generator, name: str, h: int, w: int, center) -> np.ndarray:
    """(H, W) float in {0, 1}: fill pattern ``name`` of period 2.5-5 px, orientation jittered."""
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    period, jitter = rng.uniform(2.5, 5.0), np.radians(rng.uniform(-10, 10))
    if name == "solid":
        return np.zeros((h, w), np.float32)
    if name.startswith("stripes_"):
        a = np.radians(float(name.split("_")[1])) + jitter
        return (
            np.floor((gx * np.cos(a) + gy * np.sin(a)) / period + rng.uniform(0, 2)) % 2
        ).astype(np.float32)
    u = gx * np.cos(jitter) + gy * np.sin(jitter) + rng.uniform(0, period * 2)
    v = -gx * np.sin(jitter) + gy * np.cos(jitter) + rng.uniform(0, period * 2)
    if name == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if name == "dots":
        du, dv = (u % (2 * period)) - period, (v % (2 * period)) - period
        return (du * du + dv * dv < (0.5 * period) ** 2).astype(np.float32)
    r = np.hypot(gx - center[0], gy - center[1])
    return (np.floor(r / period) % 2).astype(np.float32)


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours at least 90 apart (Euclidean, 0..255)."""
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    while True:
        c1 = rng.uniform(0, 255, 3).astype(np.float32)
        if np.linalg.norm(c1 - c0) > 90:
            return c0, c1


class ClutteredShapes(Dataset):
    """``length`` images of one small object in clutter, occluders and noise (module docstring).

    Item ``i`` is ``((3, S, S) float RGB in [0, 1], label)`` with ``label = i % K`` (balanced).
    ``label="pattern"``: the K = 8 fill patterns of :data:`PATTERNS` on a random shape;
    ``label="shape"``: the 6 shapes of :data:`detnorm.data.shapes.CLASSES` with a random
    pattern. ``scale`` is the (min, max) object extent as a fraction of the side, ``noise`` the
    (min, max) noise sigma in 0..255 units. ``augment`` flips the cached image at random
    (torch's global RNG, so seeded runs repeat).
    """

    def __init__(self, length: int, *, image_size: int = 32, seed: int = 0, split: int = 0,
                 label: str = "pattern", scale: tuple[float, float] = (0.5, 0.9),
                 noise: tuple[float, float] = (5, 25), occluders: tuple[int, int] = (0, 2),
                 clutter: bool = True, augment: bool = False):  # fmt: skip
        if label not in ("pattern", "shape"):
            raise ValueError(f"ClutteredShapes: label must be 'pattern' or 'shape', got {label!r}")
        if length < 1 or image_size < 8:
            raise ValueError(f"ClutteredShapes: need length >= 1 and image_size >= 8, got "
                             f"{length} and {image_size}")  # fmt: skip
        self.length, self.size, self.seed, self.split = length, image_size, seed, split
        self.label, self.scale, self.noise, self.occluders = label, scale, noise, occluders
        self.clutter, self.augment = clutter, augment
        self.classes = list(PATTERNS if label == "pattern" else CLASSES)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> np.ndarray:
        """Item ``index`` as uint8 (S, S, 3); a pure function of (seed, split, index)."""
        from detnorm.data.shapes import draw_background, draw_scribbles, shape_mask

        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        rng = np.random.default_rng([self.seed, 200 + self.split, index])
        s, k = self.size, index % len(self.classes)
        shape = CLASSES[k] if self.label == "shape" else CLASSES[int(rng.integers(len(CLASSES)))]
        pattern = PATTERNS[k] if self.label == "pattern" else PATTERNS[int(rng.integers(len(PATTERNS)))]  # fmt: skip
        image = draw_background(rng, s, s, self.clutter)
        size = float(np.exp(rng.uniform(np.log(self.scale[0] * s), np.log(self.scale[1] * s))))
        center = rng.uniform(size / 2, s - size / 2, 2)
        mask = shape_mask(rng, shape, s, s, tuple(center), size).astype(bool)
        c0, c1 = _two_colours(rng)
        t = _pattern(rng, pattern, s, s, center)[..., None]
        image[mask] = (c0 * (1 - t) + c1 * t)[mask]
        for _ in range(int(rng.integers(self.occluders[0], self.occluders[1] + 1))):
            _occluding_blob(rng, image, center, 0.5 * size)
        draw_scribbles(rng, image)
        sigma = np.float32(rng.uniform(*self.noise))
        image += rng.standard_normal(image.shape, dtype=np.float32) * sigma
        return np.clip(image, 0, 255).round().astype(np.uint8)

    def __getitem__(self, index: int):
        image = self._cache.get(index)
        if image is None:
            image = self._cache[index] = self.render(index)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        if self.augment:  # patterns: a 180-degree turn only (a mirror swaps 45 and 135)
            flips = torch.randint(0, 2, (2,)).tolist()
            if self.label == "pattern":
                flips[1] = flips[0]
            dims = [d for d, f in zip((2, 1), flips, strict=True) if f]
            if dims:
                x = x.flip(dims)
        return x.contiguous(), index % len(self.classes)
