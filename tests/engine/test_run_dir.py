"""One run per folder: a finished run is never overwritten silently, a live run's folder is
refused naming its PID, a dead run's lock does not stick, and ``--resume`` refuses a config that
drifted from the run's ``config.yaml`` unless ``--force-resume``."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import tiny_args

from detnorm.cli.train import main

REPO = Path(__file__).resolve().parents[2]


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_readme_command_twice_goes_to_a_fresh_folder(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default folder is runs/<name> under the working directory
    argv = [*tiny_args(tiny_data), "--norm", "gn"]
    assert main(argv) == 0
    first = Path("runs/r18_gn_1x")
    before = (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert (f"{first} holds a finished run at step 2; this run writes to runs/r18_gn_1x_2"
            in capsys.readouterr().out)  # fmt: skip
    assert json.loads(Path("runs/r18_gn_1x_2/metrics.json").read_text())["step"] == 2
    assert (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before  # untouched


@pytest.mark.bad_input
def test_explicit_folder_with_a_finished_run_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*tiny_args(tiny_data), "--norm", "gn", "--output-dir", str(out)]
    assert main(argv) == 0
    (out / "checkpoints" / "step=000099.ckpt").write_bytes(b"from the old run")
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error(capsys)
    assert line.startswith(f"detnorm-train: error: --output-dir: {out} holds a finished run")
    assert "--resume" in line and "--overwrite" in line
    assert main([*argv, "--overwrite"]) == 0  # replaces it: nothing of the old run is left
    assert not (out / "checkpoints" / "step=000099.ckpt").exists()


@pytest.mark.bad_input
def test_live_run_refused_naming_its_pid_and_dead_lock_not_stuck(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = ("import sys, time; from pathlib import Path; from detnorm.engine.run_dir import RunLock; "
            f"RunLock(Path({str(out)!r})).acquire(); print('locked', flush=True); time.sleep(300)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = [*tiny_args(tiny_data), "--norm", "gn", "--output-dir", str(out)]
        assert main(argv) == 2
        line = _one_error(capsys)
        assert f"--output-dir: {out} is in use by a running training (PID {holder.pid})" in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (out / ".lock").read_text().split()[0] == str(holder.pid)  # stale: its owner died
    assert main(argv) == 0


@pytest.mark.bad_input
def test_resume_with_a_drifted_config(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*tiny_args(tiny_data), "--norm", "gn", "--output-dir", str(out), "--resume", "auto"]
    assert main(argv) == 0  # nothing to resume yet: a fresh run
    capsys.readouterr()
    assert main([*argv, "--base-lr", "0.01", "--seed", "5"]) == 2
    line = _one_error(capsys)
    assert line.startswith(f"detnorm-train: error: --resume: the config differs from the run's "
                           f"{out / 'config.yaml'} in base_lr (0.02 -> 0.01)")  # fmt: skip
    assert "seed (0 -> 5)" in line and "--force-resume" in line
    assert main([*argv, "--max-steps", "3", "--eval-period", "3"]) == 0  # run length, logging
    assert json.loads((out / "metrics.json").read_text())["step"] == 3
    capsys.readouterr()
    assert main([*argv, "--max-steps", "3", "--base-lr", "0.01", "--force-resume"]) == 0
    assert "--force-resume: resuming although the config differs in base_lr" in (
        capsys.readouterr().out
    )
