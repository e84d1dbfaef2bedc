"""``DetectionDataModule``: files on disk -> ``(images, targets)`` batches for Mask R-CNN.

Batches are ``(list[Tensor (3, H, W) float32 RGB in [0, 1]], list[dict])``, targets as in
``coco.CocoInstanceDataset``. Train images are resized/flipped by the loader; val/test images
keep their original size (the model resizes in eval), see ``transforms`` for the reasoning.

DDP: the train loader uses ``GroupedBatchSampler`` which shards by rank itself, so the Trainer
must be built with ``use_distributed_sampler=False``. Val/test loaders give each rank every W-th
image with ``ShardSampler`` and no padding (COCO evaluation needs every image exactly once, which
a padded ``DistributedSampler`` would break); the module gathers the predictions by image id.

Mid-epoch resume: this module's ``state_dict()`` (saved by Lightning in every checkpoint) holds the
train sampler's ``{"epoch", "consumed"}``; ``load_state_dict()`` arms the sampler so the resumed
epoch continues at the next unseen batch. Consumption is counted in ``on_before_batch_transfer``
while ``trainer.training`` is true, i.e. once per training step actually taken.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .coco import CocoInstanceDataset
from .paths import resolve_data_paths
from .sampler import GroupedBatchSampler, ShardSampler
from .synthetic import ensure_default_dataset
from .transforms import build_train_transform
from .workers import worker_init

log = logging.getLogger("detnorm.data")


def collate_detection(batch):
    """List of (image, target) -> (list of images, list of targets); no stacking."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


class ResumableDataLoader(DataLoader):
    """DataLoader whose ``state_dict``/``load_state_dict`` are its batch sampler's, so Lightning
    treats it as resumable (see ``sampler.GroupedBatchSampler``)."""

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


def load_coco_quietly(path):
    """pycocotools ``COCO(path)`` without its progress prints."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


class DetectionDataModule(pl.LightningDataModule):
    """COCO-format train/val/test data. ``data=None`` uses the embedded synthetic dataset.

    See ``paths.resolve_data_paths`` for ``data``/``*_ann``/``*_images``; ``test_ann`` and
    ``test_images`` default to the val split. ``scale_jitter`` / ``color_jitter`` (None: off)
    go to ``transforms.build_train_transform``. ``keep_empty`` applies to training only (eval
    splits keep every image so COCO metrics see all of them). ``pin_memory`` defaults to CUDA
    availability. ``accumulate_grad_batches``: the Trainer's; the train sampler pads each epoch
    to whole optimizer steps (``sampler.GroupedBatchSampler``). After ``setup()``: ``num_classes`` (K + 1, background included), ``num_categories`` (K), ``categories``, ``label_to_cat_id``, ``val_ann_file``,
    ``val_coco`` (crowd kept), ``paths``.
    """

    def __init__(
        self,
        data=None,
        *,
        train_ann=None,
        train_images=None,
        val_ann=None,
        val_images=None,
        batch_size: int = 2,
        num_workers: int = 0,
        train_scales=(800,),
        max_size: int = 1333,
        keep_empty: bool = False,
        scale_jitter=None,
        color_jitter=None,
        seed: int = 0,
        pin_memory: bool | None = None,
        test_ann=None,
        test_images=None,
        decoder: str | None = None,
        accumulate_grad_batches: int = 1,
        skip_bad_images: bool = False,
    ):
        super().__init__()
        self.data = data
        self.overrides = dict(
            train_ann=train_ann, train_images=train_images, val_ann=val_ann, val_images=val_images
        )
        self.test_ann, self.test_images = test_ann, test_images
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.train_scales = tuple(int(s) for s in train_scales)
        self.max_size = int(max_size)
        self.keep_empty = keep_empty
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.augment = {"scale_jitter": scale_jitter, "color_jitter": color_jitter}
        self.seed = int(seed)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.decoder_kw = {} if decoder is None else {"decoder": decoder}
        # every CocoInstanceDataset: unreadable images left out (counted) or fatal at setup
        self.decoder_kw["skip_bad_images"] = bool(skip_bad_images)
        self.undecodable: dict[int, str] = {}  # train image id -> reason (decode-time failures)
        self.train_set = self.val_set = self.test_set = None
        self.batch_sampler: GroupedBatchSampler | None = None
        self._pending_state: dict | None = None

    # ---------------------------------------------------------------- datasets
    def prepare_data(self) -> None:
        """Generate the default dataset once (Lightning runs this on local rank 0 only)."""
        if self.data is None and all(v is None for v in self.overrides.values()):
            ensure_default_dataset()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self.data
        if data is None and all(v is None for v in self.overrides.values()):
            data = ensure_default_dataset()
        self.paths = resolve_data_paths(data, **self.overrides)
        p = self.paths
        self.train_set = CocoInstanceDataset(
            p["train_ann"],
            p["train_images"],
            transform=build_train_transform(self.train_scales, self.max_size, **self.augment),
            keep_empty=self.keep_empty,
            name="train",
            **self.decoder_kw,
        )
        cmap = self.train_set.category_map
        self.val_set = CocoInstanceDataset(
            p["val_ann"], p["val_images"], category_map=cmap, name="val", **self.decoder_kw
        )
        if self.test_ann is None and self.test_images is None:
            self.test_set = self.val_set
            self.test_ann_file = Path(p["val_ann"])
        else:
            test = resolve_data_paths(
                None,
                p["train_ann"],
                p["train_images"],
                self.test_ann or p["val_ann"],
                self.test_images or p["val_images"],
            )
            self.test_set = CocoInstanceDataset(
                test["val_ann"],
                test["val_images"],
                category_map=cmap,
                name="test",
                **self.decoder_kw,
            )
            self.test_ann_file = Path(test["val_ann"])
        self.num_classes = cmap.num_classes  # background included, as build_maskrcnn counts
        self.num_categories = cmap.num_categories
        self.categories = cmap.categories
        self.label_to_cat_id = dict(cmap.label_to_cat_id)
        self.val_ann_file = Path(p["val_ann"])
        self.val_coco = load_coco_quietly(self.val_ann_file)

    # ------------------------------------------------------------- dataloaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        world, rank = self._world()
        self.batch_sampler = GroupedBatchSampler(
            self.train_set.aspect_groups(),
            self.batch_size,
            num_replicas=world,
            rank=rank,
            seed=self.seed,
            with_seeds=True,
            accumulate=self.accumulate_grad_batches,
        )
        if self._pending_state is not None:
            self.batch_sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        return ResumableDataLoader(
            self.train_set,
            batch_sampler=self.batch_sampler,
            num_workers=self.num_workers,
            collate_fn=collate_detection,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=functools.partial(worker_init, rank=rank),
        )

    def precise_bn_loader(self):
        """Training batches for PreciseBN (``detnorm.engine.precise_bn.PreciseBN``'s loader).

        A generator over the train set through its own aspect-grouped sampler, seeded from the
        trainer's global step (``seed + 7919 * (step + 1)``), epoch 0, 1, 2, ... for as long as
        batches are drawn (it stops if an epoch is empty). The training sampler and its resume
        state are untouched. Nothing runs before the first batch is drawn, so the step, world
        size and rank are those at that moment.
        """
        self.setup("fit")
        world, rank = self._world()
        trainer = getattr(self, "trainer", None)
        step = trainer.global_step if trainer is not None else 0
        epoch = 0
        while True:
            sampler = GroupedBatchSampler(
                self.train_set.aspect_groups(),
                self.batch_size,
                num_replicas=world,
                rank=rank,
                seed=self.seed + 7919 * (step + 1),
                with_seeds=True,
            )
            sampler.set_epoch(epoch)
            loader = DataLoader(
                self.train_set,
                batch_sampler=sampler,
                num_workers=self.num_workers,
                collate_fn=collate_detection,
            )
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                return
            epoch += 1

    def _eval_loader(self, dataset) -> DataLoader:
        # One image per batch, as detectron2 evaluates: batching pads images to a common size,
        # which changes features near the borders and so the metrics. With batch 1 the numbers
        # do not depend on --batch-size. Under DDP each rank evaluates its own share of the
        # images (the module gathers the predictions).
        world, rank = self._world()
        return DataLoader(
            dataset,
            batch_size=1,
            sampler=ShardSampler(len(dataset), num_replicas=world, rank=rank),
            num_workers=self.num_workers,
            collate_fn=collate_detection,
            pin_memory=self.pin_memory,
            worker_init_fn=functools.partial(worker_init, rank=rank),
        )

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._eval_loader(self.test_set)

    # ------------------------------------------------------------------ resume
    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and self.batch_sampler is not None:
            self.batch_sampler.advance(1)
        if trainer is None or trainer.training:  # replaced training images: count, then drop
            for target in batch[1]:
                for skip in target.pop("undecodable", ()):
                    self.undecodable[skip["image_id"]] = skip["reason"]
        return batch

    def state_dict(self) -> dict:
        if self.batch_sampler is not None:
            return {"train_sampler": self.batch_sampler.state_dict()}
        if self._pending_state is not None:
            return {"train_sampler": dict(self._pending_state)}
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        state = state_dict.get("train_sampler")
        if state is None:
            return
        if self.batch_sampler is not None:
            self.batch_sampler.load_state_dict(state)
        else:
            self._pending_state = dict(state)
