"""Trainer options that ``detnorm.engine.run.run_training`` resolves before building the Trainer:
gradient accumulation, ``--max-epochs``, early stopping, ``--max-detections``, and the lines the
run prints about them.

* Effective batch: ``devices x nodes x batch_size x accumulate_grad_batches`` images per
  optimizer step. The LR and every iteration count scale with it (``detnorm.solver.schedule``), but a
  norm with batch statistics sees only what one device's forward pass holds:
  :func:`batch_note` says so under the norm table.
* ``--max-epochs E`` replaces the iteration schedule by ``E`` epochs of optimizer steps; the
  schedule is compressed to that length as ``--max-steps`` does (milestones and warmup keep
  their fractions).
* Early stopping watches ``val/score`` (segm AP, else bbox AP), the score ``best.ckpt`` follows,
  with a patience counted in evaluations.
"""

from __future__ import annotations

from collections import Counter

__all__ = [
    "batch_note",
    "dense_scene_warning",
    "early_stopping",
    "optimizer_warning",
    "resolve_max_steps",
    "steps_per_epoch",
]


def steps_per_epoch(dm, world: int, accumulate: int) -> int:
    """Optimizer steps in one training epoch of DataModule ``dm`` (after ``setup``) on each of
    ``world`` ranks, with ``accumulate`` batches per step."""
    from detnorm.data.sampler import GroupedBatchSampler

    sampler = GroupedBatchSampler(dm.train_set.aspect_groups(), dm.batch_size,
                                  num_replicas=world, seed=dm.seed, accumulate=accumulate)  # fmt: skip
    return max(1, len(sampler) // accumulate)


def resolve_max_steps(cfg: dict, dm, world: int) -> dict:
    """``cfg`` with ``max_steps`` set from ``max_epochs`` (when given; it wins over
    ``max_steps``), else ``cfg`` unchanged."""
    if cfg.get("max_epochs") is None:
        return cfg
    per_epoch = steps_per_epoch(dm, world, cfg["accumulate_grad_batches"])
    return {**cfg, "max_steps": cfg["max_epochs"] * per_epoch}


def early_stopping(patience: int):
    """Lightning ``EarlyStopping`` on ``val/score`` (higher is better), checked after every
    evaluation: training stops after ``patience`` evaluations without improvement."""
    from pytorch_lightning.callbacks import EarlyStopping

    return EarlyStopping(monitor="val/score", mode="max", patience=patience,
                         check_on_train_epoch_end=False, check_finite=False)  # fmt: skip


def batch_note(cfg: dict, norms: dict[str, str]) -> str:
    """Lines for under the norm table: the effective batch and what the norms normalize over.

    ``norms``: component -> resolved norm name (``DetnormModule.norms``).
    """
    b, k = cfg["batch_size"], cfg["accumulate_grad_batches"]
    devices, nodes = cfg["devices"], cfg["num_nodes"]
    total = b * devices * nodes * k
    lines = [f"Effective batch: {b} images per device x {devices} device(s) x {nodes} node(s) x "
             f"{k} accumulated = {total} images per optimizer step (the LR and schedule follow it)."]  # fmt: skip
    used = set(norms.values())
    if "bn" in used:
        comps = ", ".join(c for c, n in norms.items() if n == "bn")
        lines.append(f"bn ({comps}): batch statistics come from the per-device batch of {b} "
                     "image(s) (in the heads: their RoIs), whatever the accumulation or devices.")  # fmt: skip
    if "sync_bn" in used:
        comps = ", ".join(c for c, n in norms.items() if n == "sync_bn")
        lines.append(f"sync_bn ({comps}): batch statistics come from {b} x {devices * nodes} "
                     "image(s) across devices; accumulation does not enlarge them.")  # fmt: skip
    if used - {"bn", "sync_bn"}:
        lines.append("The other norms use no batch statistics: accumulation is exact for them.")
    return "\n".join(lines)


def dense_scene_warning(val_coco, limit: int) -> str | None:
    """A warning when some validation image has more (non-crowd) ground-truth objects than the
    model's ``limit`` of detections per image, naming the largest count; else None.

    ``val_coco``: a pycocotools ``COCO`` (``dataset["annotations"]``) or a COCO dict.
    """
    dataset = getattr(val_coco, "dataset", val_coco)
    counts = Counter(a["image_id"] for a in dataset.get("annotations", [])
                     if not a.get("iscrowd", 0))  # fmt: skip
    over = {i: n for i, n in counts.items() if n > limit}
    if not over:
        return None
    worst = max(over, key=over.__getitem__)  # the first image with the largest count
    return (f"warning: {len(over)} validation image(s) have more ground-truth objects than the "
            f"{limit} detections per image the model returns (largest: {over[worst]} objects, "
            f"image id {worst}); their recall and AP cannot reach 100; raise --max-detections")  # fmt: skip


def optimizer_warning(cfg: dict) -> str | None:
    """A warning for AdamW at an SGD-sized LR (the default ``base_lr`` 0.02), else None."""
    if cfg["optimizer"] == "adamw" and cfg["base_lr"] >= 0.01:
        return (f"warning: --optimizer adamw with --base-lr {cfg['base_lr']} (an SGD value); "
                "AdamW usually wants about 1e-4 at 16 images per step")  # fmt: skip
    return None
