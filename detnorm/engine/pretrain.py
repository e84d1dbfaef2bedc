"""Pretrain a ResNet backbone with any detnorm norm on image classification.

``tools/pretrain_backbone.py`` is the command line. The network is the ResNet body that
:func:`detnorm.modeling.maskrcnn.build_maskrcnn` builds for ``backbone_norm=NORM`` plus
torchvision's ``fc``, saved as a plain torchvision ResNet state_dict that ``--pretrained
DIR/backbone.pth`` loads through :func:`detnorm.weights.load.load_weights` (``fc.*`` ignored).
Its sidecar ``backbone.pth.json`` (norm, groups, depth, data, top-1) lets the loader refuse
another group count. ``--width W`` trains the narrow ResNet of
:mod:`detnorm.modeling.narrow_resnet` instead (``classifier.pth``; not a backbone).

Data: ``--data DIR`` is an ImageFolder tree (``DIR/train/<class>/*``, ``DIR/val/<class>/*``);
``--synthetic`` renders images with the embedded generator's drawing code
(:mod:`detnorm.data.classification`): ``--task single`` one large shape of the 6 classes on a
cluttered, textured background; ``--task cluttered`` the classification sweep's harder 32 px task
(8 fill patterns of a small occluded object in clutter and noise). Both are pure functions of
(``--data-seed``, split, index) and share no image with the detection dataset.

Recipe: SGD with momentum 0.9, LR ``base_lr * batch / lr_reference`` (default the GN paper's 0.1
per 256 images; the classification sweep uses 0.1 per 32), linear warmup (``--warmup-fraction``
of the run, else min(500, 5 %) steps) then cosine decay, weight decay 1e-4 and 0 on norm
parameters. ``--epochs`` sets the length in passes over the training set. Every
``--eval-every-epochs`` the val error joins the run's curve (``pretrain.json``); with
``--precise-bn-iters N`` a BN model is also evaluated once more at the end with PreciseBN
statistics (:func:`detnorm.layers.batch_stats.update_bn_stats` over N training batches of
``--precise-bn-batch`` images, on a copy) besides its running (EMA) statistics. ``frozen_bn`` has
nothing to learn, so it is pretrained as ``bn`` (those weights load into frozen_bn, bn and
sync_bn). Images are normalized with torchvision's RGB mean/std, as detnorm's model does.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from detnorm.data.classification import ClutteredShapes, ShapeClassification
from detnorm.engine.checkpoint_io import AtomicCheckpointIO
from detnorm.io import atomic_write, write_json_atomic
from detnorm.layers.batch_stats import update_bn_stats
from detnorm.layers.norm import batchnorm_modules
from detnorm.modeling.backbone import DEPTHS, build_resnet
from detnorm.modeling.narrow_resnet import build_narrow_resnet
from detnorm.solver.param_groups import param_groups

__all__ = ["PretrainModule", "ShapeClassification", "build_classifier", "pretrain"]

_MEAN = (0.485, 0.456, 0.406)  # torchvision's RGB statistics, as detnorm.modeling.input_transform
_STD = (0.229, 0.224, 0.225)


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


def build_classifier(depth: int, norm: str, gn_groups: int, num_classes: int,
                     width: int | None = None, blocks: tuple[int, ...] = (1, 1, 1),
                     stem_stride: int = 1) -> Classifier:  # fmt: skip
    """detnorm's backbone body for ``norm`` with a fresh ``fc`` of ``num_classes`` outputs, or
    with ``width`` the narrow ResNet of :mod:`detnorm.modeling.narrow_resnet` (``blocks`` per stage)."""
    if width is not None:
        return Classifier(build_narrow_resnet(width, trained_norm(norm), gn_groups, num_classes,
                                              blocks=tuple(blocks), stem_stride=stem_stride))  # fmt: skip
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


@torch.no_grad()
def top1(net: nn.Module, loader) -> float:
    """Top-1 accuracy (%) of ``net`` in eval mode over ``loader`` (modes restored)."""
    modes = {m: m.training for m in net.modules()}
    net.eval()
    correct = total = 0
    for x, y in loader:
        correct, total = correct + int((net(x).argmax(1) == y).sum()), total + len(y)
    for m, training in modes.items():
        m.training = training
    return 100.0 * correct / max(1, total)


class PretrainModule(pl.LightningModule):
    """Classification training of :func:`build_classifier`; logs ``train/loss``, ``val/top1``.

    Each validation during fit appends ``{"step", "epoch", "error", "train_loss"}`` to
    ``curve`` (kept in checkpoints); ``steps_per_epoch`` converts steps to epochs."""

    def __init__(self, *, depth: int, norm: str, gn_groups: int, num_classes: int, lr: float,
                 max_steps: int, weight_decay: float = 1e-4, momentum: float = 0.9,
                 width: int | None = None, blocks: tuple[int, ...] = (1, 1, 1),
                 stem_stride: int = 1, warmup: int | None = None,
                 steps_per_epoch: int = 1):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net = build_classifier(depth, norm, gn_groups, num_classes, width, blocks, stem_stride)
        self.top1: float | None = None
        self.curve: list[dict] = []
        self._counts, self._loss = [0, 0], [0.0, 0]

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self._loss = [self._loss[0] + float(loss.detach()), self._loss[1] + 1]
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
        if self.trainer.state.fn == "fit":
            self.add_point()

    def add_point(self) -> None:
        """Append the current step's val error (and mean training loss since the last point)."""
        step = int(self.trainer.global_step)
        if self.top1 is None or (self.curve and self.curve[-1]["step"] == step):
            return
        loss = self._loss[0] / self._loss[1] if self._loss[1] else None
        self.curve.append({"step": step, "epoch": round(step / self.hparams.steps_per_epoch, 3),
                           "error": round(100.0 - self.top1, 3), "train_loss": loss})  # fmt: skip
        self._loss = [0.0, 0]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["curve"] = self.curve

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.curve = list(checkpoint.get("curve", []))

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.net, weight_decay=hp.weight_decay)
        opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        warmup = hp.warmup if hp.warmup is not None else min(500, max(1, hp.max_steps // 20))
        fn = functools.partial(warmup_cosine, warmup=max(1, warmup), total=hp.max_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _datasets(args):
    seed = args.seed if args.data_seed is None else args.data_seed
    if args.data is not None:
        train, val = imagefolder_splits(Path(args.data), args.image_size)
        return train, val, f"ImageFolder {args.data} ({len(train)} train / {len(val)} val)"
    if args.task == "cluttered":
        kw = {"image_size": args.image_size, "seed": seed}
        train, val = ClutteredShapes(args.num_train, augment=True, **kw), ClutteredShapes(args.num_val, split=1, **kw)  # fmt: skip
        name = "cluttered small shapes"
    else:
        kw = {"image_size": args.image_size, "seed": seed, "clutter": not args.no_clutter}
        train, val = ShapeClassification(args.num_train, **kw), ShapeClassification(args.num_val, split=1, **kw)  # fmt: skip
        name = f"synthetic shapes{' without clutter' if args.no_clutter else ''}"
    return train, val, f"{name} ({args.num_train} train / {args.num_val} val, {args.image_size} px)"


def _loader(ds, batch: int, workers: int, *, seed: int | None = None) -> DataLoader:
    kw = {"num_workers": workers, "persistent_workers": workers > 0}
    if seed is None:  # evaluation: in order
        return DataLoader(ds, max(batch, 64), **kw)
    return DataLoader(ds, batch, shuffle=True, drop_last=len(ds) > batch,
                      generator=torch.Generator().manual_seed(seed), **kw)  # fmt: skip


def _precise_bn_top1(net: nn.Module, train, val_dl, args) -> tuple[float | None, int]:
    """Top-1 of a copy of ``net`` after PreciseBN (``--precise-bn-iters`` batches of
    ``--precise-bn-batch`` training images); ``(None, 0)`` without BN layers."""
    if not args.precise_bn_iters or not batchnorm_modules(net):
        return None, 0
    net = copy.deepcopy(net)
    loader = _loader(train, args.precise_bn_batch, 0, seed=args.seed + 1)
    used = update_bn_stats(net, (x for x, _ in loader), args.precise_bn_iters)
    return top1(net, val_dl), used


def pretrain(args: argparse.Namespace) -> dict:
    """Train, evaluate top-1 on val and write the weights (+ ``.json``) and ``pretrain.json``
    (the meta with the curve); returns the meta (``{}`` on ranks other than 0)."""
    out = Path(args.output_dir)
    train, val, source = _datasets(args)
    classes = list(train.classes)
    train_dl, val_dl = _loader(train, args.batch_size, args.num_workers, seed=args.seed), _loader(val, args.batch_size, args.num_workers)  # fmt: skip
    per_epoch = len(train_dl)
    steps = max(1, round(args.epochs * per_epoch)) if args.epochs else args.max_steps
    warmup = round(args.warmup_fraction * steps) if args.warmup_fraction is not None else None
    every = max(1, round(args.eval_every_epochs * per_epoch)) if args.eval_every_epochs else None
    pl.seed_everything(args.seed, workers=True, verbose=False)
    lr = args.base_lr * args.batch_size / args.lr_reference
    module = PretrainModule(depth=args.depth, norm=args.norm, gn_groups=args.gn_groups,
                            num_classes=len(classes), lr=lr, max_steps=steps,
                            weight_decay=args.weight_decay, width=args.width, warmup=warmup,
        blocks=tuple(args.blocks), stem_stride=args.stem_stride,
                            steps_per_epoch=per_epoch)  # fmt: skip
    ckpts = pl.callbacks.ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0,
                                         every_n_train_steps=args.checkpoint_period)  # fmt: skip
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=args.devices, precision=args.precision,
        strategy="ddp" if args.devices > 1 else "auto", max_steps=steps, max_epochs=-1,
        val_check_interval=every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        logger=pl.loggers.CSVLogger(out, name="", version=""), callbacks=[ckpts],
        enable_model_summary=False, log_every_n_steps=min(10, steps),
        plugins=[AtomicCheckpointIO()], enable_progress_bar=not args.no_progress_bar,
    )  # fmt: skip
    last = out / "checkpoints" / "last.ckpt"
    resume = str(last) if args.resume and last.is_file() else None
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(
            module, train_dl, val_dl if every else None, ckpt_path=resume, weights_only=True
        )
    seconds = time.perf_counter() - start
    trainer.validate(module, val_dl, verbose=False)
    if not trainer.is_global_zero:
        return {}
    module.add_point()
    precise, used = _precise_bn_top1(module.net, train, val_dl, args)
    narrow = args.width is not None
    meta = {"format": "detnorm_narrow_resnet" if narrow else "torchvision_resnet",
            "depth": args.depth, "width": args.width, "blocks": list(args.blocks) if narrow else None, "norm": trained_norm(args.norm),
            "requested_norm": args.norm, "gn_groups": args.gn_groups, "classes": classes,
            "data": source, "image_size": args.image_size, "batch_size": args.batch_size,
            "lr": lr, "steps": int(trainer.global_step), "epochs": args.epochs,
            "steps_per_epoch": per_epoch, "warmup_steps": warmup, "train_seconds": round(seconds, 1),
            "top1": module.top1, "val_error": 100.0 - module.top1, "seed": args.seed,
            "precise_bn_batches": used, "top1_precise_bn": precise,
            "val_error_precise_bn": None if precise is None else 100.0 - precise}  # fmt: skip
    weights = None
    if not args.no_weights:
        state = {k: v.detach().cpu() for k, v in module.net.body.state_dict().items()}
        name = "classifier.pth" if narrow else "backbone.pth"
        weights = atomic_write(out / name, functools.partial(torch.save, state), binary=True)
        write_json_atomic(weights.with_name(weights.name + ".json"), meta, indent=1)
    meta["weights"] = None if weights is None else str(weights)
    write_json_atomic(out / "pretrain.json", meta | {"curve": module.curve}, indent=1)
    return meta | {"curve": module.curve}
