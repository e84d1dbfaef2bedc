"""Crash-safe JSON files: a reader whose errors name the file, an atomic writer, and
the evaluation outputs of a run (``results_{bbox,segm}.json``, ``metrics.json``).

A file written by :func:`write_json_atomic` is either the old complete file or the new
complete file, never a half-written one, even if the process is killed mid-write.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically and return the path.

    The data goes to a temporary file in the same directory (so the rename never crosses a
    file system), is flushed and fsync'ed, and then ``os.replace`` puts it in place. The
    parent directory is created if needed. NaN and infinity are refused (``ValueError``),
    because they are not JSON; use ``None`` for undefined numbers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Load a JSON file; raise ``ValueError`` naming ``what`` and the path if it is missing or bad.

    ``what`` is how the caller refers to the file, e.g. an option name like ``"--ann"``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what}: not valid JSON: {path} ({e})") from None


def save_results(
    output_dir: str | os.PathLike, results: Mapping[str, list], metrics: Mapping
) -> dict[str, Path]:
    """Atomically write ``results_{iou_type}.json`` for each results entry and ``metrics.json``.

    Returns ``{"bbox": path, "segm": path, "metrics": path}`` (for the iou types present).
    """
    output_dir = Path(output_dir)
    paths = {t: write_json_atomic(output_dir / f"results_{t}.json", r) for t, r in results.items()}
    paths["metrics"] = write_json_atomic(output_dir / "metrics.json", metrics, indent=2)
    return paths
