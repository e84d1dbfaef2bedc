"""A full disk (ENOSPC) or an I/O error (EIO) halfway through a write: the previous file stays
intact, the temporary file is removed, and a training run stops with one line naming the file
and how to continue (the last good checkpoint resumes)."""

import errno
import io
import json
import os

import pytest
import torch
from helpers.runs import tiny_args

from detnorm import io as dio
from detnorm.cli.train import main

pytestmark = pytest.mark.bad_input


def _half_then(err):
    def write(f):
        f.write("x" * 1000)  # half of the new content reaches the temporary file
        raise OSError(err, os.strerror(err))

    return write


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_atomic_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, err):
    path = tmp_path / "metrics.json"
    dio.write_json_atomic(path, {"step": 1})
    with pytest.raises(OSError) as info:
        dio.atomic_write(path, _half_then(err))
    assert info.value.errno == err and info.value.filename == str(path)
    assert json.loads(path.read_text()) == {"step": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_fsync_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results_bbox.json"
    dio.write_json_atomic(path, [1])

    def fail(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(dio.os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output error"):
        dio.save_results(tmp_path, {"bbox": [2]}, {"step": 2})
    assert json.loads(path.read_text()) == [1] and sorted(os.listdir(tmp_path)) == [path.name]


def test_full_disk_while_checkpointing_stops_the_run_cleanly(
    tiny_data,
    tmp_path,
    monkeypatch,
    capsys,
):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # the second checkpoint hits a full disk halfway
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)
    argv = [*tiny_args(tiny_data), "--norm", "gn", "--max-steps", "3", "--output-dir", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"detnorm-train: stopped: cannot write {out / 'checkpoints'}")
    assert "No space left on device" in err[0] and f"--resume auto --output-dir {out}" in err[0]
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()
    kept = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert kept["global_step"] == 1  # the previous checkpoint, complete

    monkeypatch.setattr(torch, "save", real_save)  # space freed: the advice works
    assert main([*argv, "--resume", "auto"]) == 0
    assert json.loads((out / "metrics.json").read_text())["step"] == 3
