"""Toolkit overhead: detnorm's LightningModule in a real Trainer.fit against a plain PyTorch loop.

    python benchmarks/bench_overhead.py [--steps 8] [--rounds 4] [--norm gn] [--device cpu]

Arm "lightning" is the production path: ``detnorm.engine.trainer.build_trainer`` (StepSeed, EvalAtEnd,
RunCheckpoints callbacks, CSV + TensorBoard loggers, progress bar, ``log_every_n_steps`` of the
embedded preset) fitting ``DetnormModule`` for ``--steps`` steps. Arm "plain" is a hand-written
loop over the same torchvision model (``build_maskrcnn`` via the same module class, same seed),
the same in-memory batches, the same optimizer param groups and LR schedule (from
``configure_optimizers``) and the same per-step seeds. The per-step period is taken from the end
of step 1 to the end of the last step (Trainer set-up and the first step are excluded), in
interleaved rounds; the losses of the two arms are compared step by step to show they did the
same work.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fixed_batches, interleaved, machine, to_device, write_result  # noqa: E402

from detnorm.config import DEFAULTS, EMBEDDED_PRESET, merge  # noqa: E402
from detnorm.engine.build import build_module, module_hparams  # noqa: E402
from detnorm.engine.seeding import step_seed  # noqa: E402
from detnorm.engine.trainer import build_trainer  # noqa: E402


class _Clock(pl.Callback):
    def __init__(self):
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())
        self.losses.append(float(outputs["loss"]))


class _Meta:  # what module_hparams reads from a DataModule
    num_classes = 7  # 6 categories + the background
    label_to_cat_id = {i: i for i in range(1, 7)}
    categories = [{"name": f"c{i}"} for i in range(1, 7)]


def config(norm: str, steps: int, device: str, out: Path) -> dict:
    cfg = merge(copy.deepcopy(DEFAULTS), EMBEDDED_PRESET)
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    cfg.update(norm=norm, max_steps=steps, eval_period=None, accelerator=accelerator,
               output_dir=str(out), num_workers=0)  # fmt: skip
    return cfg


def new_module(cfg: dict, seed: int):
    torch.manual_seed(seed)
    return build_module(module_hparams(cfg, _Meta, total_batch_size=cfg["batch_size"]))


def lightning_arm(cfg, batches, device, record):
    def run() -> float:
        module = new_module(cfg, cfg["seed"])
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(cfg, Path(tmp), module, world=1)
            clock = _Clock()
            trainer.callbacks.append(clock)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer.fit(module, train_dataloaders=batches)
        record["lightning"] = clock.losses
        return (clock.ends[-1] - clock.ends[0]) / (len(clock.ends) - 1)

    return run


def plain_arm(cfg, batches, device, record):
    def run() -> float:
        module = new_module(cfg, cfg["seed"])
        model = module.model.to(device).train()
        opt = module.configure_optimizers()
        optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
        ends, losses = [], []
        for step, batch in enumerate(batches):
            s = step_seed(cfg["seed"], step, 0)
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
            images, targets = to_device(batch, device)
            loss = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            ends.append(time.perf_counter())
        record["plain"] = losses
        return (ends[-1] - ends[0]) / (len(ends) - 1)

    return run


def _identity(x):
    return x


def run(steps: int = 8, rounds: int = 4, norm: str = "gn", device: str = "cpu") -> dict:
    # the same in-memory batches for both arms, served by a DataLoader (Lightning needs one)
    batches = DataLoader(fixed_batches("embedded", steps), batch_size=None, collate_fn=_identity)
    with tempfile.TemporaryDirectory() as out:
        cfg = config(norm, steps, device, Path(out))
        record: dict = {}
        res = interleaved({"plain": plain_arm(cfg, batches, device, record),
                           "lightning": lightning_arm(cfg, batches, device, record)},
                          rounds=rounds)  # fmt: skip
    diff = max(abs(a - b) for a, b in zip(record["plain"], record["lightning"], strict=True))
    ratios = [b / a for a, b in zip(res["plain"]["times_s"], res["lightning"]["times_s"],
                                    strict=True)]  # fmt: skip
    return {
        "machine": machine(device),
        "setting": f"embedded preset: ResNet-18 FPN, norm {norm}, batch 2, short side "
        f"{EMBEDDED_PRESET['train_scales']}, max {EMBEDDED_PRESET['max_size']}",
        "steps_per_round": steps,
        "rounds": rounds,
        "plain_s_per_step": res["plain"]["median_s"],
        "lightning_s_per_step": res["lightning"]["median_s"],
        "ratio": res["lightning"]["median_s"] / res["plain"]["median_s"],
        "ratio_per_round": ratios,
        "median_of_round_ratios": statistics.median(ratios),
        "max_abs_loss_diff": diff,
        "raw": res,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--norm", default="gn")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.steps, args.rounds, args.norm, args.device)
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
