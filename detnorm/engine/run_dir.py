"""The run directory of ``tools/train.py``: which folder a run writes to, one run per folder, and
the check that a resumed run still has the config it was started with.

* :func:`choose_output_dir`: a default folder (``runs/<name>``) that already holds a run is never
  reused silently: the run goes to ``runs/<name>_2`` (``_3``, ...) and says so. An explicit
  ``--output-dir`` that holds a run is refused, naming ``--resume`` and ``--overwrite``.
* :class:`RunLock`: ``OUT/.lock``, held with ``flock`` for the whole run and holding the PID.
  The kernel drops the lock when its process dies, so a crashed run never leaves it stuck.
* :func:`check_config_drift`: ``--resume`` with a config that differs from the run's saved
  ``config.yaml`` in anything but run-length, logging and run-control keys is refused, listing
  the keys; ``--force-resume`` resumes anyway.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
from pathlib import Path

import yaml

from detnorm.config import DEFAULTS, ConfigError

__all__ = [
    "DRIFT_IGNORED",
    "RunLock",
    "check_config_drift",
    "choose_output_dir",
    "clear_run",
    "release_locks",
    "run_state",
]

RUN_DIR_ENV = "DETNORM_RUN_DIR"  # rank 0's choice, read by the DDP ranks it launches
# config.yaml keys a resumed run may change: run length (and what it derives), logging, and
# options that do not change what is computed
DRIFT_IGNORED = frozenset({
    "max_steps", "max_epochs", "schedule", "milestones", "warmup_steps", "early_stopping_patience",
    "eval_period", "checkpoint_period", "log_every_n_steps", "eval_backend", "logger",
    "resume", "force_resume", "overwrite", "trust_weights", "output_dir", "name", "num_workers",
})  # fmt: skip
_STEP_FILE = re.compile(r"^step=(\d+)\.ckpt$")
_RUN_FILES = ("metrics.json", "metrics.csv", "config.yaml", "hparams.yaml", "results_bbox.json",
              "results_segm.json", "predictions.png")  # fmt: skip


def _is_rank_zero() -> bool:
    return not any(os.environ.get(k) not in (None, "", "0") for k in
                   ("RANK", "SLURM_PROCID", "LOCAL_RANK"))  # fmt: skip


def run_state(out: Path) -> tuple[str, int | None]:
    """``("none" | "finished" | "unfinished", step)`` of the run in ``out``.

    A folder holds a run when it has checkpoints or ``metrics.json``; the run is finished when
    ``metrics.json`` is at the ``max_steps`` of its ``config.yaml``. ``step``: the metrics' step
    (finished) or the highest ``step=N.ckpt`` (unfinished; None when there is none).
    """
    ckpts = sorted((out / "checkpoints").glob("*.ckpt")) if (out / "checkpoints").is_dir() else []
    metrics_step = max_steps = None
    try:
        metrics_step = int(json.loads((out / "metrics.json").read_text())["step"])
        max_steps = int(yaml.safe_load((out / "config.yaml").read_text())["max_steps"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):  # no such file
        pass
    if not ckpts and metrics_step is None:
        return "none", None
    if metrics_step is not None and max_steps is not None and metrics_step >= max_steps:
        return "finished", metrics_step
    steps = [int(m.group(1)) for p in ckpts if (m := _STEP_FILE.match(p.name))]
    return "unfinished", max(steps) if steps else metrics_step


def _describe(out: Path, state: str, step: int | None) -> str:
    at = f" at step {step}" if step is not None else ""
    return f"{out} holds {'a finished' if state == 'finished' else 'an unfinished'} run{at}"


def choose_output_dir(cfg: dict, default: Path) -> Path:
    """The folder this run writes to (see the module doc); raises ``ConfigError`` naming
    ``--output-dir`` when an explicit folder holds a run and neither flag was given."""
    env = os.environ.get(RUN_DIR_ENV)
    if env and not _is_rank_zero():
        return Path(env)
    if cfg.get("overwrite") and cfg.get("resume") is not None:
        raise ConfigError("overwrite", "cannot be combined with --resume (one replaces the run, "
                          "the other continues it)")  # fmt: skip
    explicit = cfg.get("output_dir") is not None
    out = Path(cfg["output_dir"]) if explicit else Path(default)
    if cfg.get("resume") is not None or cfg.get("overwrite"):
        chosen = out
    else:
        state, step = run_state(out)
        if state == "none":
            chosen = out
        elif explicit:
            more = "" if state == "unfinished" else " (with a larger --max-steps)"
            raise ConfigError("output_dir", f"{_describe(out, state, step)}; --resume continues "
                              f"it{more}, --overwrite replaces it")  # fmt: skip
        else:
            k = 2
            while run_state(out.with_name(f"{out.name}_{k}"))[0] != "none" or _held_by_other(
                out.with_name(f"{out.name}_{k}")
            ):
                k += 1
            chosen = out.with_name(f"{out.name}_{k}")
            print(f"{_describe(out, state, step)}; this run writes to {chosen} (--resume "
                  f"continues the old one, --overwrite replaces it)", flush=True)  # fmt: skip
    os.environ[RUN_DIR_ENV] = str(chosen)
    return chosen


def clear_run(out: Path) -> None:
    """Remove what a run wrote into ``out`` (``--overwrite``): checkpoints, logs, results."""
    for name in ("checkpoints", "tb"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- the lock
_HELD: dict[Path, RunLock] = {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: Path) -> tuple[int | None, str]:
    try:
        fields = path.read_text().split()
        return int(fields[0]), fields[1] if len(fields) > 1 else "?"
    except (OSError, ValueError, IndexError):
        return None, "?"


def _held_by_other(out: Path) -> bool:
    pid, host = _read_holder(out / ".lock")
    return (
        pid is not None
        and pid != os.getpid()
        and host == socket.gethostname()
        and (_pid_alive(pid))
    )


class RunLock:
    """``OUT/.lock`` held with an exclusive ``flock`` while a run writes into ``OUT``.

    ``acquire()`` raises ``ConfigError`` naming the PID of a live holder. File systems without
    ``flock`` fall back to the PID in the file (a dead PID on this host is a stale lock).
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        previous = _HELD.pop(self.out.resolve(), None)
        if previous is not None:  # the same process ran here before (in-process callers)
            previous.release()
        self.out.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.ENOLCK, errno.EOPNOTSUPP):
                    raise
                if e.errno in (errno.EAGAIN, errno.EACCES) or _held_by_other(self.out):
                    self._refuse()
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no flock here
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the file was removed by the run that just released it
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self._fd = fd
            _HELD[self.out.resolve()] = self
            return self
        self._refuse()

    def _refuse(self):
        pid, host = _read_holder(self.path)
        who = f"PID {pid}" if pid is not None else "another process"
        where = f" on {host}" if host not in ("?", socket.gethostname()) else ""
        raise ConfigError("output_dir", f"{self.out} is in use by a running training ({who}"
                          f"{where}); wait for it to end or choose another --output-dir")  # fmt: skip

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        _HELD.pop(self.out.resolve(), None)


def release_locks() -> None:
    """Release every lock this process holds (the end of ``detnorm.cli.train.main``)."""
    for lock in list(_HELD.values()):
        lock.release()


# ------------------------------------------------------------------------------ config drift
def _plain(value):
    return yaml.safe_load(yaml.safe_dump(value))


def check_config_drift(saved_file: Path, resolved: dict, *, force: bool) -> list[str]:
    """Keys (outside :data:`DRIFT_IGNORED`) whose value differs between ``saved_file`` (the
    run's ``config.yaml``) and ``resolved``; raises ``ConfigError`` listing them unless
    ``force``. Keys missing on one side compare as their default."""
    try:
        saved = yaml.safe_load(Path(saved_file).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(saved, dict):
        return []
    new = _plain(resolved)
    diffs = []
    for key in sorted(set(saved) | set(new)):
        if key in DRIFT_IGNORED:
            continue
        old_v, new_v = saved.get(key, DEFAULTS.get(key)), new.get(key, DEFAULTS.get(key))
        if old_v != new_v:
            diffs.append(f"{key} ({old_v!r} -> {new_v!r})")
    if diffs and not force:
        raise ConfigError("resume", f"the config differs from the run's {saved_file} in "
                          f"{', '.join(diffs)}; resume with the run's options, or pass "
                          f"--force-resume to resume anyway")  # fmt: skip
    return diffs
