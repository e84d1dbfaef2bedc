"""Shared pieces of the benchmarks: machine description, interleaved timing, fixed inputs.

Every ratio in BENCHMARKS.md comes from arms measured side by side in one process, in
interleaved rounds (A B A B ...), and reported as medians, so that load from other processes on
a shared machine hits every arm alike. Nothing here is asserted in the unit tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from detnorm.config import EMBEDDED_PRESET
from detnorm.io import atomic_write
from detnorm.modeling.maskrcnn import build_maskrcnn
from detnorm.solver.param_groups import param_groups

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NORMS = ("frozen_bn", "bn", "gn", "sync_bn", "gn_ws")
CACHE = Path(os.environ.get("DETNORM_BENCH_CACHE", Path(tempfile.gettempdir()) / "detnorm-bench"))

# Input settings. "embedded": the CPU preset training runs use; "512"/"800": realistic sizes
# (ResNet-50 FPN, torchvision's default RPN/RoI sampling, several instances per image).
SETTINGS = {
    "embedded": {"depth": 18, "image_size": 128, "scales": tuple(EMBEDDED_PRESET["train_scales"]),
                 "max_size": EMBEDDED_PRESET["max_size"], "test_size": EMBEDDED_PRESET["test_size"],
                 "model_kwargs": dict(EMBEDDED_PRESET["model_kwargs"])},
    "512": {"depth": 50, "image_size": (512, 683), "scales": (512,), "max_size": 853,
            "test_size": 512, "model_kwargs": {}},
    "800": {"depth": 50, "image_size": (800, 1333), "scales": (800,), "max_size": 1333,
            "test_size": 800, "model_kwargs": {}},
}  # fmt: skip


def machine(device: str = "cpu") -> dict:
    """What the figures were measured on."""
    info = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device,
        "label": f"{os.cpu_count()}-core CPU, shared with other jobs",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["label"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError):
        info["load_avg_1m"] = os.getloadavg()[0]
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(arms: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict:
    """Run ``arms`` in rounds A B A B ...; each callable returns its own elapsed seconds.

    Returns ``{name: {"median_s", "times_s"}}``; ``warmup`` rounds are run and dropped.
    """
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(warmup + rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))  # no fixed position bias
        for name in order:
            t = arms[name]()
            if r >= warmup:
                times[name].append(t)
    return {n: {"median_s": statistics.median(t), "times_s": t} for n, t in times.items()}


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def dataset_root(setting: str) -> Path:
    """A synthetic COCO dataset for ``setting`` (generated once into ``CACHE``)."""
    from detnorm.data import ensure_default_dataset, generate_dataset

    size = SETTINGS[setting]["image_size"]
    if setting == "embedded":
        return ensure_default_dataset()
    root = CACHE / f"synthetic_{setting}"
    if not (root / "annotations" / "train.json").is_file():
        generate_dataset(root, num_train=8, num_val=4, image_size=size)
    return root


def datamodule(setting: str, batch_size: int = 2, num_workers: int = 0):
    from detnorm.data import DetectionDataModule

    s = SETTINGS[setting]
    dm = DetectionDataModule(dataset_root(setting), batch_size=batch_size, num_workers=num_workers,
                             train_scales=s["scales"], max_size=s["max_size"])  # fmt: skip
    dm.setup("fit")
    return dm


def fixed_batches(setting: str, n: int, batch_size: int = 2) -> list:
    """``n`` training batches ``(images, targets)`` from the real loader, kept in memory."""
    it = iter(datamodule(setting, batch_size).train_dataloader())
    return [next(it) for _ in range(n)]


def to_device(batch, device: str):
    images, targets = batch
    images = [im.to(device) for im in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]  # fmt: skip
    return images, targets


def build_model(setting: str, norm: str, *, box_head: str | None = "4conv1fc", num_classes=7):
    s = SETTINGS[setting]
    kw = {"min_size": s["test_size"], "max_size": s["max_size"], **s["model_kwargs"]}
    return build_maskrcnn(num_classes=num_classes, depth=s["depth"], norm=norm,
                          box_head=box_head, **kw)  # fmt: skip


def sgd(model, lr: float = 0.01):
    groups = param_groups(model, weight_decay=1e-4, norm_weight_decay=0.0)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def train_step(model, optimizer, batch, bf16: bool = False) -> float:
    """One plain-PyTorch training step (the forward under CPU bf16 autocast with ``bf16``, as
    ``--precision bf16-mixed`` does); returns the loss."""
    images, targets = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        losses = model(images, targets)
        loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def write_result(out: str | os.PathLike | None, result: dict) -> None:
    """Write a benchmark's result dict as JSON to ``out`` (nothing when None), atomically."""
    if out is not None:
        atomic_write(out, lambda f: f.write(json.dumps(result, indent=2, default=str)))


def ratio_str(x: float) -> str:
    return f"{x:.3f}x"
