"""Pretrain a ResNet backbone with any detnorm norm on image classification.

``tools/pretrain_backbone.py`` is the command line. The network is the ResNet body that
:func:`detnorm.modeling.maskrcnn.build_maskrcnn` builds for ``backbone_norm=NORM`` (same modules, same
state_dict keys) plus torchvision's ``fc`` classifier, so the saved file is a plain torchvision
ResNet state_dict (format ``torchvision_resnet``): ``--pretrained DIR/backbone.pth`` loads it
into the backbone through :func:`detnorm.weights.load.load_weights` (``fc.*`` is ignored). A
sidecar ``backbone.pth.json`` records norm, groups, depth, data and top-1 accuracy; the loader
reads it to refuse a backbone with another group count.

Data: ``--data DIR`` is an ImageFolder tree (``DIR/train/<class>/*``, ``DIR/val/<class>/*``);
``--synthetic`` renders single-shape images with the embedded generator's drawing code
(:mod:`detnorm.data.shapes`: the 6 shape classes on cluttered, textured backgrounds), a pure
function of (seed, split, index) that shares no image with the detection dataset.

Recipe: SGD with momentum 0.9, LR ``base_lr * batch / 256`` (the GN paper's 0.1 per 256 images),
linear warmup then cosine decay, weight decay 1e-4 and 0 on norm parameters. ``frozen_bn`` has
nothing to learn, so it is pretrained as ``bn`` (those weights load into frozen_bn, bn and
sync_bn). Images are normalized with torchvision's RGB mean/std, as detnorm's model does.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from detnorm.engine.checkpoint_io import AtomicCheckpointIO
from detnorm.io import atomic_write, write_json_atomic
from detnorm.modeling.backbone import DEPTHS, build_resnet
from detnorm.solver.param_groups import param_groups

__all__ = ["PretrainModule", "ShapeClassification", "build_classifier", "pretrain"]

_MEAN = (
    0.485,
    0.456,
    0.406,
)  # torchvision's RGB statistics, as detnorm.modeling.input_transform uses
_STD = (0.229, 0.224, 0.225)


class ShapeClassification(Dataset):
    """``length`` single-shape images: item ``i`` is ``((3, S, S) float RGB in [0, 1], label)``.

    The label is the shape class (``detnorm.data.shapes.CLASSES``, balanced: ``i % 6``); size,
    rotation, position, colour, texture and background clutter are random per (seed, split, i).
    """

    def __init__(self, length: int, *, image_size: int = 64, seed: int = 0, split: int = 0,
                 clutter: bool = True):  # fmt: skip
        from detnorm.data.shapes import CLASSES

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
        x = torch.from_numpy(np.clip(image, 0, 255) / 255.0).permute(2, 0, 1).float()
        return x.contiguous(), label


def imagefolder_splits(root: Path, image_size: int):
    """``(train, val)`` torchvision ``ImageFolder`` datasets of ``root/train`` and ``root/val``."""
    from torchvision import datasets, transforms

    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ValueError(
                f"--data {root}: no {split}/ folder (expected {split}/<class>/<image>)"
            )
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor()])  # fmt: skip
    val_tf = transforms.Compose([transforms.Resize(round(image_size / 0.875)),
                                 transforms.CenterCrop(image_size), transforms.ToTensor()])  # fmt: skip
    train = datasets.ImageFolder(root / "train", transform=train_tf)
    val = datasets.ImageFolder(root / "val", transform=val_tf)
    if train.classes != val.classes:
        raise ValueError(
            f"--data {root}: train/ and val/ have different class folders "
            f"({train.classes} vs {val.classes})"
        )
    return train, val


def trained_norm(norm: str) -> str:
    """The norm actually trained: ``frozen_bn`` (statistics only) is pretrained as ``bn``."""
    return "bn" if norm == "frozen_bn" else norm


class Classifier(nn.Module):
    """Normalize RGB in [0, 1] with torchvision's mean/std, then a ResNet: ``(N,3,H,W) -> (N,K)``."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def build_classifier(depth: int, norm: str, gn_groups: int, num_classes: int) -> Classifier:
    """detnorm's backbone body for ``norm`` with a fresh ``fc`` of ``num_classes`` outputs."""
    if depth not in DEPTHS:
        raise ValueError(f"--depth: must be one of {', '.join(map(str, DEPTHS))}, got {depth}")
    body = build_resnet(depth, trained_norm(norm), gn_groups, False)
    body.fc = nn.Linear(body.fc.in_features, num_classes)
    return Classifier(body)


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """LR factor: linear from 0.001 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return 0.001 + (1 - 0.001) * step / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class PretrainModule(pl.LightningModule):
    """Classification training of :func:`build_classifier`; logs ``train/loss``, ``val/top1``."""

    def __init__(self, *, depth: int, norm: str, gn_groups: int, num_classes: int, lr: float,
                 max_steps: int, weight_decay: float = 1e-4, momentum: float = 0.9):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net = build_classifier(depth, norm, gn_groups, num_classes)
        self.top1: float | None = None
        self._counts = [0, 0]

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._counts = [0, 0]

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._counts[0] += int((self.net(x).argmax(1) == y).sum())
        self._counts[1] += len(y)

    def on_validation_epoch_end(self) -> None:
        correct = torch.tensor(self._counts, dtype=torch.float64, device=self.device)
        correct = self.trainer.strategy.reduce(correct, reduce_op="sum")
        self.top1 = float(100.0 * correct[0] / max(1.0, float(correct[1])))
        self.log("val/top1", self.top1, prog_bar=True, sync_dist=False)

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.net, weight_decay=hp.weight_decay)
        opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        warmup = min(500, max(1, hp.max_steps // 20))
        fn = functools.partial(warmup_cosine, warmup=warmup, total=hp.max_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loaders(args) -> tuple[DataLoader, DataLoader, list[str], str]:
    if args.synthetic:
        kw = {"image_size": args.image_size, "seed": args.seed, "clutter": not args.no_clutter}
        train = ShapeClassification(args.num_train, **kw)
        val = ShapeClassification(args.num_val, split=1, **kw)
        source = (
            f"synthetic shapes{' without clutter' if args.no_clutter else ''} "
            f"({args.num_train} train / {args.num_val} val, {args.image_size} px)"
        )
    else:
        train, val = imagefolder_splits(Path(args.data), args.image_size)
        source = f"ImageFolder {args.data} ({len(train)} train / {len(val)} val)"
    g = torch.Generator().manual_seed(args.seed)
    kw = {"num_workers": args.num_workers, "persistent_workers": args.num_workers > 0}
    return (DataLoader(train, args.batch_size, shuffle=True, drop_last=len(train) > args.batch_size,
                       generator=g, **kw),
            DataLoader(val, max(args.batch_size, 64), **kw), list(train.classes), source)  # fmt: skip


def pretrain(args: argparse.Namespace) -> dict:
    """Train, evaluate top-1 on val and write ``backbone.pth`` (+ ``.json``); returns the meta."""
    out = Path(args.output_dir)
    train_dl, val_dl, classes, source = _loaders(args)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    lr = args.base_lr * args.batch_size / 256
    module = PretrainModule(depth=args.depth, norm=args.norm, gn_groups=args.gn_groups,
                            num_classes=len(classes), lr=lr, max_steps=args.max_steps,
                            weight_decay=args.weight_decay)  # fmt: skip
    ckpts = pl.callbacks.ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0,
                                         every_n_train_steps=args.checkpoint_period)  # fmt: skip
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=args.devices, precision=args.precision,
        strategy="ddp" if args.devices > 1 else "auto", max_steps=args.max_steps, max_epochs=-1,
        val_check_interval=None, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        logger=pl.loggers.CSVLogger(out, name="", version=""), callbacks=[ckpts],
        enable_model_summary=False, log_every_n_steps=min(10, args.max_steps),
        plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    last = out / "checkpoints" / "last.ckpt"
    resume = str(last) if args.resume and last.is_file() else None
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, train_dl, ckpt_path=resume, weights_only=True)
    seconds = time.perf_counter() - start
    trainer.validate(module, val_dl, verbose=False)
    if not trainer.is_global_zero:
        return {}
    state = {k: v.detach().cpu() for k, v in module.net.body.state_dict().items()}
    weights = atomic_write(out / "backbone.pth", functools.partial(torch.save, state), binary=True)
    meta = {"format": "torchvision_resnet", "depth": args.depth, "norm": trained_norm(args.norm),
            "requested_norm": args.norm, "gn_groups": args.gn_groups, "classes": classes,
            "data": source, "image_size": args.image_size, "batch_size": args.batch_size,
            "lr": lr, "steps": int(trainer.global_step), "train_seconds": round(seconds, 1),
            "top1": module.top1, "seed": args.seed}  # fmt: skip
    write_json_atomic(weights.with_name(weights.name + ".json"), meta, indent=1)
    meta["weights"] = str(weights)
    return meta
