"""Cost of the setup-time image check (``detnorm.data.image_check``) against decoding the images.

    python benchmarks/bench_image_check.py [--images 1000] [--size 480 640] [--out FILE.json]

Writes ``--images`` JPEGs and as many PNGs of ``--size`` (H W) into a temporary folder, then
measures, interleaved over ``--rounds`` rounds (medians, ``common.interleaved``):

* ``check``: the header check of every file with an empty cache (size, EXIF, PNG CRCs; threads);
* ``cached``: the same check again, answered from the cache (one ``stat`` per file);
* ``decode``: decoding every file with the training loader's decoder, in this one thread.

and prints their ratios as a markdown table. Speed is never asserted in the unit tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, write_result  # noqa: E402

from detnorm.data import image_check  # noqa: E402
from detnorm.data.image_io import read_image  # noqa: E402


def write_images(folder: Path, n: int, size: tuple[int, int], ext: str) -> list[str]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (*size, 3), np.uint8), (9, 9), 0)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.{ext}"
        cv2.imwrite(str(path), np.roll(base, i, axis=1))
        paths.append(str(path))
    return paths


def measure(paths: list[str], cache: Path, rounds: int) -> dict:
    ann = cache / "ann.json"

    def check() -> float:
        shutil.rmtree(cache / "image_headers", ignore_errors=True)
        start = time.perf_counter()
        image_check.check_images(paths, ann_file=ann)
        return time.perf_counter() - start

    def cached() -> float:
        image_check.check_images(paths, ann_file=ann)  # make sure the cache is filled
        start = time.perf_counter()
        _, read = image_check.check_images(paths, ann_file=ann)
        assert read == 0
        return time.perf_counter() - start

    def decode() -> float:
        start = time.perf_counter()
        for path in paths:
            read_image(path)
        return time.perf_counter() - start

    return interleaved({"check": check, "cached": cached, "decode": decode}, rounds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="files per format")
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = p.parse_args(argv)
    results = {"machine": machine(), "images": args.images, "size": list(args.size)}
    image_check.PROGRESS_FROM = 10**9  # no progress bar in the timings
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DETNORM_CACHE"] = str(Path(tmp) / "cache")
        print("| format | files | check (s) | cached (s) | decode (s) | decode / check | "
              "check / cached |\n|---|---:|---:|---:|---:|---:|---:|")  # fmt: skip
        for ext in ("jpg", "png"):
            folder = Path(tmp) / ext
            folder.mkdir()
            paths = write_images(folder, args.images, tuple(args.size), ext)
            m = {
                k: v["median_s"]
                for k, v in measure(paths, Path(tmp) / "cache", args.rounds).items()
            }
            results[ext] = m
            print(f"| {ext} | {len(paths)} | {m['check']:.3f} | {m['cached']:.4f} | "
                  f"{m['decode']:.2f} | {m['decode'] / m['check']:.1f}x | "
                  f"{m['check'] / m['cached']:.0f}x |")  # fmt: skip
    print(f"\n{results['machine']['label']}, load {results['machine'].get('load_avg_1m')}")
    if args.out:
        write_result(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
