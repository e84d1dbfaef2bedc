"""A run killed with SIGKILL and resumed with ``--resume auto`` ends like an
uninterrupted run: same weights and optimizer state (to float rounding), LR and metrics
(CPU, deterministic)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from helpers.runs import assert_same_checkpoint, tiny_args

from detnorm.cli.train import main

REPO = Path(__file__).resolve().parents[2]


def _args(data, out) -> list[str]:
    return [
        *tiny_args(data),
        "--norm", "bn", "--max-steps", "6", "--eval-period", "3", "--checkpoint-period", "2",
        "--deterministic", "--seed", "3", "--output-dir", str(out),
    ]  # fmt: skip


def _state(out: Path, name: str = "last.ckpt") -> dict:
    return torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)


def test_killed_and_resumed_equals_uninterrupted(tiny_data, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(_args(tiny_data, full)) == 0

    # random flips stay on: the sampler seeds each sample's augmentation by (seed, epoch, index)
    code = f"from detnorm.cli.train import main; main({_args(tiny_data, killed)!r})"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    # kill right after step 4's checkpoints (step=000004.ckpt, then last.ckpt) are written:
    # mid-epoch, between two evaluations
    marker, last = (killed / "checkpoints" / n for n in ("step=000004.ckpt", "last.ckpt"))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if marker.exists() and last.stat().st_mtime_ns >= marker.stat().st_mtime_ns:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert (
        not (killed / "metrics.json").exists()
        or json.loads((killed / "metrics.json").read_text())["step"] < 6
    ), "the run finished before it was killed"
    resumed_from = _state(killed)["global_step"]
    assert resumed_from == 4

    assert main([*_args(tiny_data, killed), "--resume", "auto"]) == 0

    a, b = _state(full), _state(killed)
    assert a["global_step"] == b["global_step"] == 6
    assert_same_checkpoint(a, b, start=_state(full, "step=000004.ckpt"))
    opt_a, opt_b = a["optimizer_states"][0], b["optimizer_states"][0]
    assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 6
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (full, killed))
    assert ma == mb
    # metrics.csv: the resumed log keeps the killed run's rows and appends the rest, with no
    # duplicates; only the training row of the checkpoint's own step may be missing (Lightning
    # logs it after on_train_batch_end, where the checkpoint is taken).
    full_rows, resumed_rows = (_csv_rows(d / "metrics.csv") for d in (full, killed))
    assert len(resumed_rows) == len(set(resumed_rows))
    assert set(resumed_rows) <= set(full_rows)
    missing = set(full_rows) - set(resumed_rows)
    assert len(missing) <= 1 and all(r[0] == str(resumed_from - 1) for r in missing), missing


def _csv_rows(path: Path) -> list[tuple]:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ["step"] + sorted(k for k in rows[0] if k not in ("step", "epoch"))
    return [tuple(r[k] for k in keys) for r in rows]
