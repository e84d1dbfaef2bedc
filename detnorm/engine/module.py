"""``DetnormModule``: the LightningModule that trains and evaluates a detnorm Mask R-CNN.

Hyperparameters are plain values (strings, ints, floats, a ``dict[str, int]``), saved in every
checkpoint, so ``DetnormModule.load_from_checkpoint(path)`` rebuilds the model without the
data or the config files. ``module.model`` is the torchvision ``MaskRCNN``.

Batches are ``(images, targets)`` as produced by ``detnorm.data``: images a list of
``(3, H, W)`` float RGB tensors in [0, 1] (train: already resized; val: original size), targets
with ``boxes`` ``(N, 4)`` xyxy absolute pixels, ``labels`` in 1..K, ``masks`` ``(N, H, W)``
and ``image_id``.

Optimization: SGD (momentum 0.9) or AdamW (``optimizer``), weight decay ``weight_decay`` except
on norm parameters (``norm_weight_decay``, 0 by default, as in the GN paper), and the step or
cosine schedule of ``detnorm.solver.schedule`` (``lr_schedule``) stepped once per optimizer step.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from detnorm.config import MODULE_KEYS, OPTIONS, nearest_key, validate
from detnorm.engine.callbacks import NonFiniteLossError
from detnorm.engine.remedies import nonfinite_remedies
from detnorm.errors import ConfigError
from detnorm.evaluation import (
    evaluate_coco,
    gather_predictions,
    predictions_to_coco,
    save_results,
)
from detnorm.evaluation.stats import eval_max_dets
from detnorm.modeling.maskrcnn import build_maskrcnn, resolve_norms
from detnorm.solver.optimizer import build_optimizer
from detnorm.solver.schedule import build_lr_scheduler, resolve_schedule

__all__ = ["DetnormModule", "module_options"]

NORM_KEYS = ("norm", "backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm")


def module_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` filled with the schema's defaults and checked; float options as floats."""
    for key in options:
        if key not in MODULE_KEYS:
            raise ConfigError(key, "not an option of DetnormModule; did you mean "
                              f"{nearest_key(key, MODULE_KEYS)!r}?")  # fmt: skip
    hp = {key: options.get(key, OPTIONS[key].default) for key in MODULE_KEYS}
    validate(hp)
    for key, value in hp.items():
        if OPTIONS[key].type is float and value is not None:
            hp[key] = float(value)
    hp["model_kwargs"] = dict(hp["model_kwargs"])
    return hp


LOG_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# val/* values are computed on rank 0 and broadcast, so every rank logs the same number
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('val/")


class DetnormModule(pl.LightningModule):
    """Mask R-CNN with a norm per component, trained with the GN paper's recipe.

    Args:
        num_classes: classes INCLUDING the background (torchvision's convention, as in
            ``build_maskrcnn``): K categories -> K + 1.
        label_to_cat_id: ``{str(label): coco_category_id}`` for labels 1..K.
        category_names: names of the K categories in label order.
        total_batch_size: images per optimizer step (devices x nodes x batch x accumulation);
            the LR and the schedule scale with it (``detnorm.solver.schedule``).
        options: the model and solver options of :data:`detnorm.config.options.OPTIONS` whose
            records say ``module=True`` (:data:`detnorm.config.MODULE_KEYS`: the norms,
            ``gn_groups``, ``depth``, ``box_head``, ``model_kwargs``, ``base_lr``, ...), with the
            same meaning, defaults and checks; an unknown key is refused naming the nearest.
            ``model_kwargs`` holds extra ``build_maskrcnn`` / ``MaskRCNN`` keywords
            (``min_size``/``max_size`` = test size, ``rpn_batch_size_per_image``, ...).

    All of these are the hyperparameters saved in every checkpoint. Checkpoints written before
    ``num_classes`` counted the background load too (:meth:`upgrade_hparams`).

    ``output_dir`` (attribute, not a hyperparameter): where evaluation writes
    ``results_{bbox,segm}.json`` and ``metrics.json``; None falls back to
    ``trainer.default_root_dir``. ``last_metrics`` holds the latest evaluation. ``run_config``
    (attribute): the run's resolved config, saved in checkpoints as ``detnorm_config``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        label_to_cat_id: dict[str, int],
        category_names: list[str],
        total_batch_size: int = 16,
        **options: Any,
    ):
        super().__init__()
        hp = module_options(options)
        self.save_hyperparameters(
            dict(num_classes=num_classes, label_to_cat_id=label_to_cat_id,
                 category_names=list(category_names), total_batch_size=total_batch_size, **hp)
        )  # fmt: skip
        self.norms = resolve_norms(*(hp[k] for k in NORM_KEYS))
        self.label_to_cat_id = {int(k): int(v) for k, v in label_to_cat_id.items()}
        if sorted(self.label_to_cat_id) != list(range(1, num_classes)):
            raise ConfigError("num_classes", f"label_to_cat_id must map labels 1..{num_classes - 1} "
                              f"(num_classes counts the background), got {sorted(label_to_cat_id)}")  # fmt: skip
        self.schedule = resolve_schedule(
            hp["schedule"],
            total_batch_size,
            base_lr=hp["base_lr"],
            max_steps=hp["max_steps"],
            warmup_iters=hp["warmup_iters"],
            warmup_factor=hp["warmup_factor"],
            warmup_floor=hp["warmup_floor"],
            lr_schedule=hp["lr_schedule"],
        )
        model_keys = ("depth", "gn_groups", "box_head", "trainable_backbone_layers")
        self.model = build_maskrcnn(
            num_classes=num_classes,
            **{k: hp[k] for k in model_keys},
            input_format=hp["input_format"] or "rgb",
            stride_in_1x1=bool(hp["stride_in_1x1"]),
            norm=hp["norm"],
            **{f"{c}_norm": name for c, name in self.norms.items()},
            **hp["model_kwargs"],
        )
        self.run_config: dict | None = None
        self.output_dir: str | Path | None = None
        self.last_metrics: dict | None = None
        self._val_results: dict[str, list] = {"bbox": [], "segm": []}
        self._val_unreadable: list[dict] = []  # {"image_id"} of images that did not decode

    @staticmethod
    def upgrade_hparams(hparams: dict) -> dict:
        """Saved hyperparameters in today's form: before 0.2, ``num_classes`` left out the
        background (then it equals the number of labels in ``label_to_cat_id``)."""
        hp = dict(hparams)
        if hp.get("num_classes") == len(hp.get("label_to_cat_id", ())):
            hp["num_classes"] += 1
        return hp

    @classmethod
    def from_hparams(cls, hparams: dict) -> DetnormModule:
        """A fresh module from saved hyperparameters (of any detnorm version; keys this
        version does not know are left out)."""
        hp = cls.upgrade_hparams(hparams)
        known = ("num_classes", "label_to_cat_id", "category_names", "total_batch_size",
                 *MODULE_KEYS)  # fmt: skip
        return cls(**{k: hp[k] for k in known if k in hp})

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``, for checkpoints of any detnorm version. The
        file is read with ``weights_only=True`` (tensors and plain values) unless the caller
        passes ``weights_only=False``. Only the saved hyperparameters are read before Lightning
        loads it: the tensors are memory-mapped, not read, to find ``num_classes``."""
        if "num_classes" not in kwargs:
            from detnorm.weights.safe_load import torch_load

            trust = kwargs.get("weights_only") is False
            saved = torch_load(checkpoint_path, trust=trust, mmap=True)
            hp = saved.get(cls.CHECKPOINT_HYPER_PARAMS_KEY, {})
            kwargs["num_classes"] = cls.upgrade_hparams(hp).get("num_classes")
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["detnorm_config"] = self.run_config

    # ----------------------------------------------------------------- training
    def forward(self, images, targets=None):
        return self.model(images, targets)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        bad = not bool(torch.isfinite(loss))
        if self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            clip = self.trainer.gradient_clip_val
            remedies = nonfinite_remedies(self.hparams, self.schedule, self.norms,
                                          None if not clip else float(clip))  # fmt: skip
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step + 1} (rank {self.global_rank}: "
                f"loss={float(loss.detach()):.4g}; {terms}); stopped before updating the weights; the "
                f"checkpoints keep the last good state (step <= {self.global_step})\n"
                "to try:" + "".join(f"\n  - {line}" for line in remedies)
            )
        n = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=n)
        self.log(
            "lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=n
        )
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(
            self.model,
            hp.get("optimizer", "sgd"),
            lr=self.schedule.lr,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
            norm_weight_decay=hp.norm_weight_decay,
        )
        scheduler = build_lr_scheduler(optimizer, self.schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # --------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        self._val_results = {"bbox": [], "segm": []}
        self._val_unreadable = []

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        # an image that failed to decode has no detections (COCO counts it as such)
        unreadable = [t["image_id"] for t in targets if "undecodable" in t]
        self._val_unreadable.extend({"image_id": int(i)} for i in unreadable)
        if unreadable:
            images = [im for im, t in zip(images, targets, strict=True) if "undecodable" not in t]
            targets = [t for t in targets if "undecodable" not in t]
            if not images:
                return
        outputs = self.model(images)
        image_ids = [int(t["image_id"]) for t in targets]
        outputs = [{k: v.float().cpu() for k, v in o.items()} for o in outputs]
        for iou_type, dets in predictions_to_coco(outputs, image_ids, self.label_to_cat_id).items():
            self._val_results[iou_type].extend(dets)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        results = {t: gather_predictions(r) for t, r in self._val_results.items()}
        unreadable = gather_predictions(self._val_unreadable)
        metrics = None
        if self.trainer.is_global_zero:
            gt = self.trainer.datamodule.val_coco
            max_dets = eval_max_dets(self.model.roi_heads.detections_per_img)
            metrics = evaluate_coco(
                gt, results, backend=self.hparams.eval_backend, max_dets=max_dets
            )
            metrics["step"] = int(self.global_step)
            val_set = getattr(self.trainer.datamodule, "val_set", None)
            skipped = {int(i) for i, _, _ in getattr(val_set, "skipped_images", [])}
            ids = sorted({int(d["image_id"]) for d in unreadable} | skipped)
            if ids:  # left out at setup or failed to decode: scored as images without detections
                metrics["unreadable_images"] = ids
            out = self.output_dir or self.trainer.default_root_dir
            save_results(out, results, metrics)
        metrics = self.trainer.strategy.broadcast(metrics, src=0)
        self.last_metrics = metrics
        flat = {}
        for iou_type in ("bbox", "segm"):
            for stat in LOG_STATS:
                value = metrics.get(iou_type, {}).get(stat)
                flat[f"val/{iou_type}_{stat}"] = math.nan if value is None else float(value)
        # best.ckpt is chosen by segm AP, or bbox AP when there is no segm evaluation
        key = "val/segm_AP" if "segm" in metrics else "val/bbox_AP"
        flat["val/score"] = flat[key]
        self.log_dict(flat, sync_dist=False, rank_zero_only=False)
        self._val_results = {"bbox": [], "segm": []}
