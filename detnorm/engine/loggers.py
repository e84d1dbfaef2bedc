"""The run's experiment loggers (``--logger``): CSV always, TensorBoard, Weights & Biases, MLflow.

``RUN_DIR/metrics.csv`` is always written (:class:`~detnorm.engine.csv_logger.RunCSVLogger`:
resume keeps its rows, and ``tools/compare.py`` reads it), whatever ``--logger`` lists. The
others are Lightning's own loggers, writing under the run directory:

=============  ========================  ==================================================
name           package                   where
=============  ========================  ==================================================
csv            (Lightning)               ``RUN_DIR/metrics.csv``
tensorboard    ``tensorboard``           ``RUN_DIR/tb/``
wandb          ``wandb`` (not a dep.)    the W&B project ``detnorm`` (``WANDB_MODE=offline``
                                         keeps it in ``RUN_DIR/wandb/``)
mlflow         ``mlflow`` (not a dep.)   ``$MLFLOW_TRACKING_URI``, else ``RUN_DIR/mlruns/``
=============  ========================  ==================================================
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from detnorm.config.checks import LOGGER_PACKAGES as LOGGERS
from detnorm.config.checks import missing_package

__all__ = ["LOGGERS", "build_loggers", "missing_package"]


def build_loggers(names, out: Path, *, run_name: str, keep_before_step: int | None = None) -> list:
    """Lightning loggers for ``names`` (``LOGGERS`` keys, validated by ``detnorm.config``),
    the CSV logger first. A missing ``tensorboard`` (the default) is skipped with a notice;
    ``detnorm.config.validate`` refuses missing ``wandb``/``mlflow`` before the run starts."""
    from detnorm.engine.csv_logger import RunCSVLogger  # Lightning: imported when used

    out = Path(out)
    loggers = [RunCSVLogger(out, keep_before_step=keep_before_step)]
    for name in dict.fromkeys(names):
        if name == "csv":
            continue
        if missing_package(name):
            print(f"detnorm: {name} is not installed; not logging to it "
                  f"(pip install {LOGGERS[name]})", file=sys.stderr)  # fmt: skip
            continue
        if name == "tensorboard":
            from pytorch_lightning.loggers import TensorBoardLogger

            loggers.append(
                TensorBoardLogger(save_dir=out, name="tb", version="", default_hp_metric=False)
            )
        elif name == "wandb":
            from pytorch_lightning.loggers import WandbLogger

            loggers.append(WandbLogger(name=run_name, save_dir=str(out), project="detnorm"))
        elif name == "mlflow":
            from pytorch_lightning.loggers import MLFlowLogger

            uri = os.environ.get("MLFLOW_TRACKING_URI") or (out / "mlruns").resolve().as_uri()
            loggers.append(
                MLFlowLogger(experiment_name="detnorm", run_name=run_name, tracking_uri=uri)
            )
        else:
            raise ValueError(f"logger: unknown {name!r}; allowed: {', '.join(LOGGERS)}")
    return loggers
