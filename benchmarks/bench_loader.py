"""Data loader throughput and image decoder comparison.

    python benchmarks/bench_loader.py [--out bench_loader.json] [--batches 30]

``loader_vs_model()`` (used by ``benchmarks/run.py``) sets the loader's images/s beside the
images/s a training step consumes at the same settings (embedded preset; 800x1333 with R50).

Measures training-loader images/s (decode + mask decode + resize/flip + tensor conversion +
collate) for num_workers 0, 1, 2 on

* the default synthetic dataset (~128 px images) at train scale 256 (max 512), and
* synthetic 800x1333 images at the paper's train scale 800 (max 1333),

and the per-image time of each decoder (cv2, PIL, torchvision.io) on the same files, with the
largest pixel difference against PIL (JPEG decoders may differ by a few levels). Prints markdown
tables and writes everything to ``--out`` as JSON. Takes about 1-2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from detnorm.data import DetectionDataModule, ensure_default_dataset, generate_dataset
from detnorm.data.image_io import DECODERS, read_image


def loader_rate(root, scales, max_size, workers, batches, batch_size=2) -> float:
    dm = DetectionDataModule(
        root, batch_size=batch_size, num_workers=workers, train_scales=scales, max_size=max_size
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            images, _ = next(it)
        except StopIteration:
            break
        n += len(images)
    rate = n / (time.perf_counter() - start)
    del it, loader
    return rate


def model_rate(setting: str, steps: int = 2, norm: str = "gn", device: str = "cpu") -> float:
    """Images/s the model consumes in training (plain step, in-memory batches of 2; the first
    step is warm-up)."""
    from common import build_model, fixed_batches, sgd, timed, to_device, train_step

    batches = [to_device(b, device) for b in fixed_batches(setting, steps + 1)]
    torch.manual_seed(0)
    model = build_model(setting, norm, box_head=None).to(device).train()
    opt = sgd(model)
    train_step(model, opt, batches[0])
    seconds = sum(timed(lambda b=b: train_step(model, opt, b), device) for b in batches[1:])
    return sum(len(b[0]) for b in batches[1:]) / seconds


def loader_vs_model(
    settings=("embedded", "800"),
    workers: int = 2,
    batches: int = 20,
    steps: int = 2,
    device: str = "cpu",
) -> list[dict]:
    """Loader images/s (``workers`` workers, batch 2) against model images/s, same settings."""
    from common import SETTINGS, dataset_root

    rows = []
    for setting in settings:
        s = SETTINGS[setting]
        load = loader_rate(dataset_root(setting), s["scales"], s["max_size"], workers, batches)
        model = model_rate(setting, steps, device=device)
        rows.append({"setting": setting, "depth": s["depth"], "scales": list(s["scales"]),
                     "max_size": s["max_size"], "workers": workers, "loader_images_per_s": load,
                     "model_images_per_s": model, "ratio": load / model})  # fmt: skip
        print(f"{setting}: loader {load:.1f} img/s, model {model:.2f} img/s, "
              f"{load / model:.0f}x", flush=True)  # fmt: skip
    return rows


def decoder_times(files, repeats=1) -> dict:
    out = {}
    ref = [read_image(f, "pil") for f in files]
    for name in DECODERS:
        read_image(files[0], name)  # warm-up (imports)
        start = time.perf_counter()
        for _ in range(repeats):
            arrays = [read_image(f, name) for f in files]
        ms = (time.perf_counter() - start) / (repeats * len(files)) * 1000
        diff = max(int(np.abs(a.astype(int) - r).max()) for a, r in zip(arrays, ref, strict=True))
        out[name] = {"ms_per_image": ms, "max_abs_diff_vs_pil": diff}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_loader.json", help="JSON file to write")
    parser.add_argument("--batches", type=int, default=30, help="batches (of 2) per measurement")
    parser.add_argument("--large-images", type=int, default=24, help="800x1333 images to generate")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
        "loader": [],
        "decoders": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        large = generate_dataset(
            Path(tmp) / "large", num_train=args.large_images, num_val=1, image_size=(800, 1333)
        )
        results["large_generation_s"] = time.perf_counter() - t0
        datasets = {
            "default (~128 px), scale 256/512": (ensure_default_dataset(), (256,), 512),
            "800x1333, scale 800/1333": (large, (800,), 1333),
        }
        for name, (root, scales, max_size) in datasets.items():
            for workers in (0, 1, 2):
                rate = loader_rate(root, scales, max_size, workers, args.batches)
                results["loader"].append(
                    {"dataset": name, "workers": workers, "images_per_s": rate}
                )
                print(f"{name} workers={workers}: {rate:.1f} img/s", flush=True)
        for name, root in (("default jpg", ensure_default_dataset()), ("800x1333 jpg", large)):
            files = sorted((root / "images" / "train").glob("*.jpg"))[:24]
            results["decoders"][name] = decoder_times(files, repeats=2 if "default" in name else 1)
        png_dir = Path(tmp) / "png"
        png_dir.mkdir()
        pngs = []
        for f in sorted((large / "images" / "train").glob("*.jpg"))[:8]:
            pngs.append(png_dir / (f.stem + ".png"))
            import cv2

            cv2.imwrite(str(pngs[-1]), cv2.imread(str(f)))
        results["decoders"]["800x1333 png"] = decoder_times(pngs)

    print("\n| dataset | workers | images/s |\n|---|---|---|")
    for row in results["loader"]:
        print(f"| {row['dataset']} | {row['workers']} | {row['images_per_s']:.1f} |")
    print("\n| files | decoder | ms/image | max abs diff vs PIL |\n|---|---|---|---|")
    for files, table in results["decoders"].items():
        for name, row in table.items():
            print(
                f"| {files} | {name} | {row['ms_per_image']:.2f} | {row['max_abs_diff_vs_pil']} |"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
