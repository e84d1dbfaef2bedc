"""The Lightning ``Trainer`` of a training run: DDP when there are several devices, the run's
checkpoints, loggers and callbacks, PreciseBN when a norm uses batch statistics."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytorch_lightning as pl

from detnorm.engine.callbacks import EvalAtEnd, RunCheckpoints, UndecodableReport
from detnorm.engine.checkpoint_io import AtomicCheckpointIO
from detnorm.engine.loggers import build_loggers
from detnorm.engine.module import DetnormModule
from detnorm.engine.precise_bn import PreciseBN
from detnorm.engine.prediction_grid import PredictionGrid
from detnorm.engine.seeding import StepSeed
from detnorm.engine.signals import GracefulStop
from detnorm.engine.trainer_options import early_stopping
from detnorm.layers.norm import uses_batch_stats

__all__ = ["build_trainer"]


def build_trainer(
    cfg: dict, out: Path, module: DetnormModule, datamodule=None, *, world: int,
    resume_step: int | None = None,
) -> pl.Trainer:  # fmt: skip
    """The Trainer: DDP when ``world > 1``, our checkpoints/loggers, PreciseBN when needed.

    ``datamodule`` hands PreciseBN its loader (``precise_bn_loader``; None: the one ``fit`` gets);
    ``resume_step``: global
    step of the checkpoint being resumed (keeps metrics.csv rows).
    """
    spec = module.schedule
    accumulate = cfg.get("accumulate_grad_batches", 1)
    loggers = build_loggers(cfg.get("logger", ["tensorboard"]), out, run_name=Path(out).name,
                            keep_before_step=resume_step)  # fmt: skip
    callbacks = [StepSeed(cfg["seed"]), EvalAtEnd(),
                 RunCheckpoints(out / "checkpoints", cfg["checkpoint_period"] or cfg["eval_period"])]  # fmt: skip
    if cfg["precise_bn"] and any(uses_batch_stats(n) for n in module.norms.values()):
        loader = datamodule.precise_bn_loader if datamodule is not None else None
        callbacks.append(PreciseBN(cfg["precise_bn_iters"], loader))
    callbacks.append(PredictionGrid(out / "predictions.png"))  # after PreciseBN's statistics
    checkpoints = next(c for c in callbacks if isinstance(c, RunCheckpoints))
    callbacks.append(GracefulStop(checkpoints))  # SIGTERM/SIGINT: save last.ckpt, then stop
    callbacks.append(UndecodableReport())
    if cfg.get("early_stopping_patience"):
        callbacks.append(early_stopping(cfg["early_stopping_patience"]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        return pl.Trainer(
            accelerator=cfg["accelerator"],
            devices=cfg["devices"],
            num_nodes=cfg["num_nodes"],
            strategy="ddp" if world > 1 else "auto",
            precision=cfg["precision"],
            gradient_clip_val=cfg["clip_grad_norm"],
            gradient_clip_algorithm="norm" if cfg["clip_grad_norm"] else None,
            max_steps=spec.max_steps,
            max_epochs=-1,
            accumulate_grad_batches=accumulate,
            # counted in batches: `accumulate` batches make one optimizer step (a full one, as
            # the train sampler pads every epoch to whole steps)
            val_check_interval=min(cfg["eval_period"] or spec.max_steps, spec.max_steps)
            * accumulate,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            deterministic=cfg["deterministic"],
            logger=loggers,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_model_summary=False,
            log_every_n_steps=cfg["log_every_n_steps"],
            default_root_dir=out,
            plugins=[AtomicCheckpointIO(trust=cfg.get("trust_weights", False))],
        )
