"""``detnorm-train`` / ``tools/train.py``: train Mask R-CNN with a norm per component.

    detnorm-train --norm gn                          # embedded data, CPU-friendly defaults
    detnorm-train --config configs/coco/gn_4conv1fc_3x.yaml --data /data/coco --devices 8

Configs stack (``--config a.yaml --config b.yaml``, last wins), flags win over configs and
``--set KEY=VALUE`` (``detnorm.config.overrides``) wins over flags. Every flag is made from the
option schema (``detnorm.config.options``).
``--print-config`` prints the resolved config and exits. Bad values exit with code 2 and one
line naming the option.
The run directory (``--output-dir``, default ``runs/<name>``) receives ``config.yaml``,
``checkpoints/{last,best,step=N}.ckpt``, ``metrics.csv``, ``tb/``, ``metrics.json`` and
``results_{bbox,segm}.json``. ``--resume`` (``auto`` = the run's ``last.ckpt``) continues
with the checkpoint's weights, optimizer, LR schedule, loop position and sampler state.
"""

from __future__ import annotations

import errno
import os
import sys

import yaml

from detnorm.cli.parser import Parser, UsageError, add_option_flags, error_line
from detnorm.config import build_config
from detnorm.config.overrides import parse_sets

PROG = "detnorm-train"
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)
_CLI_ONLY = ("config", "sets", "print_config")  # arguments that are not options of the run


def build_parser() -> Parser:
    """``detnorm-train``'s parser: ``--config``, ``--set``, ``--print-config`` and one flag per
    option of the schema that has one."""
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="config file; repeat to stack (last wins)")  # fmt: skip
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, last wins over flags (model_kwargs.KEY=VALUE for "
                   "nested keys); repeatable")  # fmt: skip
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit")  # fmt: skip
    add_option_flags(p)
    return p


def parse_command_line(argv: list[str] | None = None):
    """Command line -> (parsed args, validated config dict); raises UsageError / ConfigError."""
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in _CLI_ONLY}
    return args, build_config(args.config, flags, parse_sets(args.sets))


def parse_config(argv: list[str] | None = None) -> dict:
    """Command line -> validated config dict (raises UsageError / ConfigError)."""
    return parse_command_line(argv)[1]


def run_training(cfg: dict):
    """Train from a validated config and print the results; returns the ``RunResult``."""
    from detnorm.data.image_check import unreadable_note
    from detnorm.engine.run import run_training as run
    from detnorm.evaluation.tables import format_metrics_table, format_per_category_table

    result = run(cfg, prog=PROG)
    metrics = result.metrics
    if not result.trainer.is_global_zero:
        return result
    if metrics is not None:
        by_type = {t: metrics[t] for t in ("bbox", "segm") if t in metrics}
        print(f"\nCOCO val (step {metrics.get('step')}):\n" + format_metrics_table(by_type))
        print("\nper-category AP:\n" + format_per_category_table(by_type))
        if note := unreadable_note(metrics):
            print(note)
        print(f"metrics: {result.output_dir / 'metrics.json'}")
    if result.early_stopped:
        print(result.early_stopped)
    if result.predictions is not None:
        print(f"predictions: {result.predictions}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-train`` and ``tools/train.py``; returns the exit code."""
    from detnorm.engine.callbacks import NonFiniteLossError
    from detnorm.engine.run_dir import RUN_DIR_ENV, release_locks
    from detnorm.engine.signals import RunInterrupted
    from detnorm.errors import ConfigError

    try:
        args, cfg = parse_command_line(argv)
        if args.print_config:  # the config as resolved from defaults, files, flags and --set
            print(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None), end="")
            return 0
        run = run_training(cfg)
    except (UsageError, ConfigError) as e:
        print(error_line(PROG, e), file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"\n{PROG}: stopped: {e}", file=sys.stderr)  # on a new line after the bar
        return 1
    except RunInterrupted as e:
        print(f"{PROG}: stopped by {e}; continue with the same options plus --resume auto "
              f"--output-dir {os.environ.get(RUN_DIR_ENV)}", file=sys.stderr)  # fmt: skip
        return 128 + e.signum
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        print(f"{PROG}: stopped: cannot write {e.filename}: {e.strerror}; the file it replaces "
              f"is intact; free space, then continue with --resume auto --output-dir "
              f"{os.environ.get(RUN_DIR_ENV)}", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        release_locks()
    return 0 if run is not None else 1


if __name__ == "__main__":  # python -m detnorm.cli.train (also how DDP re-launches itself)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
