"""SIGTERM / SIGINT sent to a real training process: it writes a resumable checkpoint, exits with
128 + the signal number and one line saying how to resume, and ``--resume auto`` then ends
like an uninterrupted run (to float rounding; CPU, deterministic; the method of
tests/engine/test_resume.py)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.runs import assert_same_checkpoint, tiny_args

from detnorm.cli.train import main

REPO = Path(__file__).resolve().parents[2]


def _args(data, out) -> list[str]:
    return [
        *tiny_args(data),
        "--norm", "gn", "--max-steps", "6", "--eval-period", "3", "--checkpoint-period", "2",
        "--deterministic", "--seed", "3", "--output-dir", str(out),
    ]  # fmt: skip


def _state(out: Path, name: str = "last.ckpt") -> dict:
    return torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def full_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("signals") / "full"
    assert main(_args(tiny_data, out)) == 0
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_and_resume_matches(sig, full_run, tiny_data, tmp_path):
    out = tmp_path / "stopped"
    # Ctrl+C reaches the whole process group, data-loader workers included
    args = [*_args(tiny_data, out), *(["--num-workers", "2"] if sig == signal.SIGINT else [])]
    code = f"import sys; from detnorm.cli.train import main; sys.exit(main({args!r}))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    marker, last = (out / "checkpoints" / n for n in ("step=000002.ckpt", "last.ckpt"))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (
            marker.exists()
            and last.exists()
            and last.stat().st_mtime_ns >= marker.stat().st_mtime_ns
        ):
            break
        time.sleep(0.01)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("detnorm-train")]
    assert len(lines) == 1, err[-2000:]
    stopped_at = _state(out)["global_step"]
    assert 2 <= stopped_at < 6
    assert lines[0].startswith(f"detnorm-train: stopped by {sig.name} at step {stopped_at}; ")
    assert f"--resume auto --output-dir {out}" in lines[0]
    assert not (out / ".lock").exists() and not list(out.rglob("*.tmp"))

    assert main([*_args(tiny_data, out), "--resume", "auto"]) == 0
    a, b = _state(full_run), _state(out)
    assert a["global_step"] == b["global_step"] == 6
    assert_same_checkpoint(a, b, start=_state(full_run, "step=000002.ckpt"))
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (full_run, out))
    assert ma == mb
    assert _val_rows(out) == _val_rows(full_run)  # no evaluation was skipped by the stop


def _val_rows(out: Path) -> list[tuple]:
    with open(out / "metrics.csv", newline="") as f:
        return [(r["step"], r["val/bbox_AP"], r["val/segm_AP"]) for r in csv.DictReader(f)
                if r.get("val/bbox_AP")]  # fmt: skip
