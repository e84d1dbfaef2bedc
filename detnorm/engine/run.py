"""One training run from a validated config, and the evaluation of a checkpoint.

``run_training(cfg)``: seed, run folder (lock, ``--overwrite``), data, module, pretrained weights
or the resume checkpoint, the resolved ``config.yaml``, the Trainer, ``fit``. The command line
(``detnorm.cli.train``) parses and prints; everything between lives here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import yaml

from detnorm.config import write_yaml
from detnorm.engine import build as B
from detnorm.engine import run_dir as R
from detnorm.engine import trainer_options as O
from detnorm.engine.module import DetnormModule
from detnorm.engine.prediction_grid import PredictionGrid
from detnorm.engine.trainer import build_trainer
from detnorm.errors import ConfigError

__all__ = ["RunResult", "evaluate_checkpoint", "run_training"]


@dataclass
class RunResult:
    trainer: pl.Trainer
    module: DetnormModule
    output_dir: Path
    metrics: dict | None
    early_stopped: str | None = None  # why training stopped early, when it did
    predictions: Path | None = None  # the predictions grid, when one was drawn


def _resume_path(cfg: dict, out: Path) -> Path | None:
    if cfg["resume"] is None:
        return None
    if cfg["resume"] == "auto":
        last = out / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    return Path(cfg["resume"])


def _resolved(cfg: dict, module: DetnormModule, dm, out: Path, resume, total_batch: int) -> dict:
    """The config as the run uses it: defaults filled in, plus what it derived."""
    spec, hp = module.schedule, module.hparams
    resolved = dict(cfg)
    resolved.update({f"{c}_norm": n for c, n in module.norms.items()})
    resolved.update(
        output_dir=str(out), data=cfg["data"] or ("embedded" if cfg["train_ann"] is None else None),
        resume=str(resume) if resume else None, total_batch_size=total_batch, lr=spec.lr,
        max_steps=spec.max_steps, milestones=list(spec.milestones),
        warmup_steps=spec.warmup_iters, num_classes=hp.num_classes,
        max_detections=module.model.roi_heads.detections_per_img,
        box_head=B.box_head_name(module), trainable_backbone_layers=hp.trainable_backbone_layers,
        input_format=hp.input_format, stride_in_1x1=hp.stride_in_1x1,
        train_ann=str(dm.paths["train_ann"]), val_ann=str(dm.paths["val_ann"]),
        train_images=str(dm.paths["train_images"]), val_images=str(dm.paths["val_images"]),
    )  # fmt: skip
    return resolved


def run_training(cfg: dict, *, prog: str = "detnorm-train") -> RunResult:
    """Train from a validated config (:func:`detnorm.config.build_config`)."""
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    world = cfg["devices"] * cfg["num_nodes"]
    total_batch = cfg["batch_size"] * world * cfg["accumulate_grad_batches"]  # per optimizer step
    out = R.choose_output_dir(cfg, Path("runs") / B.run_name(cfg))
    if B.rank() == 0:
        R.RunLock(out).acquire()  # released by the command, or when this process ends
        if cfg["overwrite"]:
            R.clear_run(out)
    resume = _resume_path(cfg, out)
    dm = B.build_datamodule(cfg)
    cfg = O.resolve_max_steps(cfg, dm, world)  # --max-epochs -> optimizer steps
    module = B.build_module(B.module_hparams(cfg, dm, total_batch))
    resume_step = None
    if resume is not None:
        resume_step = B.check_resume(resume, module, trust=cfg["trust_weights"])
    elif cfg["pretrained"] != "none":
        B.load_pretrained(module, cfg["pretrained"], trust=cfg["trust_weights"],
                          prefix=cfg["pretrained_prefix"])  # fmt: skip
    module.output_dir = out
    limit = module.model.roi_heads.detections_per_img
    for warning in (O.dense_scene_warning(dm.val_coco, limit), O.optimizer_warning(cfg)):
        if warning and B.rank() == 0:
            print(f"{prog}: {warning}", file=sys.stderr, flush=True)
    resolved = _resolved(cfg, module, dm, out, resume, total_batch)
    module.run_config = resolved
    if resume is not None:
        saved = resume.parent.parent / "config.yaml"
        saved = saved if saved.is_file() else out / "config.yaml"
        drift = R.check_config_drift(saved, resolved, force=cfg["force_resume"])
        if drift:
            B.say(f"--force-resume: resuming although the config differs in {', '.join(drift)}")
    if B.rank() == 0:
        write_yaml(out / "config.yaml", resolved)
    B.say(f"# {prog}: {out}\n\n```yaml\n{yaml.safe_dump(resolved, sort_keys=False)}```\n")
    B.say(B.norm_table(module) + "\n\n" + O.batch_note(cfg, module.norms) + "\n")
    trainer = build_trainer(cfg, out, module, dm, world=world, resume_step=resume_step)
    trainer.fit(
        module, datamodule=dm, ckpt_path=str(resume) if resume else None,
        weights_only=not cfg["trust_weights"],
    )  # fmt: skip
    stopper = next(
        (c for c in trainer.callbacks if isinstance(c, pl.callbacks.EarlyStopping)), None
    )
    early = None
    if stopper is not None and stopper.wait_count >= stopper.patience:
        early = (f"early stopping at step {trainer.global_step}: val/score did not improve over "
                 f"{stopper.patience} evaluation(s) (best {float(stopper.best_score):.2f})")  # fmt: skip
    grid = next((c.written for c in trainer.callbacks if isinstance(c, PredictionGrid)), None)
    return RunResult(trainer, module, out, module.last_metrics, early, grid)


def evaluate_checkpoint(ckpt: Path, data: dict, *, trust: bool = False, test_size=None,
                        backend=None, max_detections=None, output_dir=None, trainer_kw=None,
                        warn=print) -> tuple[DetnormModule, Path]:  # fmt: skip
    """Evaluate checkpoint ``ckpt`` on the validation split of ``data`` (data options:
    ``data``, ``val_ann``, ... ``batch_size``, ``num_workers``); returns the module (its
    ``last_metrics``) and the folder the results went to (default: ``eval/`` beside the run's
    ``checkpoints/``). Errors are ``ConfigError`` with the option's key."""
    from detnorm.engine.checkpoint_io import WeightsError, load_detnorm_module

    if not ckpt.is_file():
        raise ConfigError("checkpoint", f"file not found: {ckpt}")
    try:
        module = load_detnorm_module(ckpt, trust=trust)
    except WeightsError as e:
        raise ConfigError("checkpoint", B.one_line(e)) from None
    if test_size is not None:
        module.model.transform.min_size = (test_size,)
    if backend:
        module.hparams.eval_backend = backend
    if max_detections is not None:
        module.model.roi_heads.detections_per_img = max_detections  # evaluated at max(100, N)
    data = dict(data, max_size=module.model.transform.max_size)
    if data.get("val_ann") and not data.get("train_ann") and not data.get("data"):
        data["train_ann"], data["train_images"] = data["val_ann"], data.get("val_images")
    dm = B.build_datamodule(data)
    if dm.num_classes != module.hparams.num_classes:
        raise ConfigError("checkpoint", f"{ckpt}: trained for {module.hparams.num_classes - 1} "
                          f"categories, the data has {dm.num_categories}")  # fmt: skip
    warning = O.dense_scene_warning(dm.val_coco, module.model.roi_heads.detections_per_img)
    if warning:
        warn(warning)
    out = Path(output_dir) if output_dir else ckpt.resolve().parent.parent / "eval"
    module.output_dir = out
    trainer = pl.Trainer(**{"accelerator": "auto", "devices": 1, "precision": "32-true",
                            **(trainer_kw or {})}, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, use_distributed_sampler=False)  # fmt: skip
    trainer.validate(module, datamodule=dm, verbose=False)
    return module, out
