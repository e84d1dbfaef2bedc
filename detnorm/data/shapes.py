"""Drawing primitives for the synthetic dataset (``synthetic.py``).

Images are float32 (H, W, 3) RGB in 0..255 while drawing; masks are uint8 (H, W) in {0, 1}.
Coordinates are pixels, x right and y down. All randomness comes from the caller's Generator.
"""

from __future__ import annotations

import cv2
import numpy as np

CLASSES = ("circle", "ellipse", "rectangle", "triangle", "star", "cross")
# one hue per class for ``class_colors`` scenes (RGB 0..255): red, green, blue, yellow, magenta, cyan
CLASS_COLORS = np.array(
    [[220, 40, 40], [40, 200, 40], [40, 70, 230], [230, 210, 30], [210, 40, 210], [30, 210, 220]],
    np.float32,
)
_SHIFT = 4  # cv2 fixed-point bits for sub-pixel vertices
_ONE = 1 << _SHIFT


def _fill_polygon(h: int, w: int, points: np.ndarray) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(points * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return mask


def _rotate(points: np.ndarray, angle: float, center) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return points @ rot.T + np.asarray(center)


def shape_mask(rng: np.random.Generator, name: str, h: int, w: int, center, size: float):
    """Binary mask of one shape of class ``name`` whose extent is about ``size`` pixels."""
    r = size / 2
    angle = rng.uniform(0, 2 * np.pi)
    if name == "circle":
        mask = np.zeros((h, w), np.uint8)
        c = tuple(int(round(v * _ONE)) for v in center)
        cv2.circle(mask, c, int(round(r * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        return mask
    if name == "ellipse":
        mask = np.zeros((h, w), np.uint8)
        c = tuple(int(round(v * _ONE)) for v in center)
        axes = (int(round(r * _ONE)), int(round(r * rng.uniform(0.35, 0.65) * _ONE)))
        cv2.ellipse(mask, c, axes, float(np.degrees(angle)), 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
        return mask
    if name == "rectangle":
        hw, hh = r, r * rng.uniform(0.4, 1.0)
        pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
    elif name == "triangle":
        a = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.4, 0.4, 3)
        rad = r * rng.uniform(0.8, 1.0, 3)
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
    elif name == "star":
        k = int(rng.integers(5, 8))
        a = np.arange(2 * k) * np.pi / k
        rad = np.where(np.arange(2 * k) % 2 == 0, r, r * rng.uniform(0.38, 0.55))
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
    elif name == "cross":
        t = r * rng.uniform(0.25, 0.4)
        pts = np.array(
            [[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r], [-t, t],
             [-r, t], [-r, -t], [-t, -t]]
        )  # fmt: skip
    else:
        raise ValueError(f"unknown shape {name!r}; valid: {', '.join(CLASSES)}")
    return _fill_polygon(h, w, _rotate(pts, angle, center))


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def draw_background(rng: np.random.Generator, h: int, w: int, clutter: bool = True) -> np.ndarray:
    """Low-frequency colour noise + gradient + (``clutter``) unannotated blobs and lines,
    float32 (H, W, 3)."""
    cell = int(rng.integers(16, 64))
    small = rng.uniform(0, 255, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(-1, 1, 2)
    grad = (gx * direction[0] + gy * direction[1]) / max(h, w)
    image = image * rng.uniform(0.4, 0.9) + grad[..., None] * _random_color(rng) * 0.5
    if not clutter:
        return np.clip(image, 0, 255)
    for _ in range(int(rng.integers(0, 5))):  # smooth irregular blobs: not one of the classes
        n = 24
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        rad = rng.uniform(4, 0.25 * min(h, w)) * (1 + 0.35 * np.sin(3 * a + rng.uniform(0, 6)))
        center = (rng.uniform(0, w), rng.uniform(0, h))
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1) + center
        blob = _fill_polygon(h, w, pts).astype(bool)
        image[blob] = image[blob] * 0.5 + _random_color(rng) * 0.5
    for _ in range(int(rng.integers(0, 6))):
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        p1 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.line(image, p0, p1, _random_color(rng).tolist(), int(rng.integers(1, 4)), cv2.LINE_AA)
    return np.clip(image, 0, 255)


def paint(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    clutter: bool = True,
    base_color: np.ndarray | None = None,
) -> None:
    """Fill ``mask`` in ``image`` with a random colour and texture (independent of the class).

    Without ``clutter``: solid or gradient fills only, never low-contrast. ``base_color`` (RGB):
    the fill starts from this colour (jittered by +-25) instead of a random one."""
    x0, y0, ww, hh = cv2.boundingRect(mask)
    y1, x1 = y0 + hh, x0 + ww
    m = mask[y0:y1, x0:x1].astype(bool)
    color = _random_color(rng)
    if base_color is not None:
        color = np.clip(base_color + rng.uniform(-25, 25, 3), 0, 255).astype(np.float32)
    if clutter and rng.random() < 0.2:  # low contrast: close to the local background
        color = image[y0:y1, x0:x1][m].mean(0) + rng.uniform(-35, 35, 3)
    kind = int(rng.integers(4 if clutter else 2))
    gy, gx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    if kind == 0:  # solid
        tex = np.broadcast_to(color, (hh, ww, 3))
    elif kind == 1:  # linear gradient to a second colour
        t = (gx * np.cos(a := rng.uniform(0, 6.3)) + gy * np.sin(a)) / max(hh, ww, 1)
        t = (t - t.min())[..., None]
        tex = color * (1 - t) + _random_color(rng) * t
    elif kind == 2:  # stripes
        period = rng.uniform(3, 12)
        a = rng.uniform(0, np.pi)
        s = ((gx * np.cos(a) + gy * np.sin(a)) // period % 2)[..., None]
        tex = color * (1 - s) + _random_color(rng) * s
    else:  # speckle
        tex = color + rng.normal(0, 30, (hh, ww, 3))
    region = image[y0:y1, x0:x1]
    region[m] = tex[m]


def draw_scribbles(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Thin unannotated curves drawn over everything; returns the boolean (H, W) pixels they cover."""
    h, w = image.shape[:2]
    cover = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(0, 3))):
        pts = np.cumsum(rng.normal(0, min(h, w) / 10, (6, 2)), 0) + (
            rng.uniform(0, w),
            rng.uniform(0, h),
        )
        pts = np.round(pts).astype(np.int32)[None]
        thickness = int(rng.integers(1, 3))
        cv2.polylines(cover, pts, False, 1, thickness)
        cv2.polylines(image, pts, False, _random_color(rng).tolist(), thickness)
    return cover.astype(bool)
