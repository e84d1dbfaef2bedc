"""Crash-safe JSON files: a reader whose errors name the file, an atomic writer, and
the evaluation outputs of a run (``results_{bbox,segm}.json``, ``metrics.json``).

A file written by :func:`write_json_atomic` is either the old complete file or the new
complete file, never a half-written one, even if the process is killed mid-write.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = False
) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it into place.

    The file is flushed and fsync'ed before ``os.replace`` (the rename never crosses a file
    system, since the temporary file is in the same directory), and the directory is fsync'ed
    after it, so ``path`` holds either its old or its new complete content, even if the
    process is killed mid-write. The parent directory is created if needed.

    If anything fails (a full disk: ``ENOSPC``, an I/O error: ``EIO``), the temporary file is
    removed and ``path`` keeps its previous content; an ``OSError`` without a file name is
    raised again with ``path`` as its ``filename`` (same ``errno``), so the message names it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and not e.filename:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (:func:`atomic_write`).

    NaN and infinity are refused (``ValueError``), because they are not JSON; use ``None`` for
    undefined numbers.
    """
    return atomic_write(path, functools.partial(_dump_json, obj, indent=indent))


def _dump_json(obj: Any, f: IO, *, indent: int | None) -> None:
    json.dump(obj, f, indent=indent, allow_nan=False)


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
