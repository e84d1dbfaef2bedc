"""Building a run's config: defaults, presets, YAML files that stack, flags, ``--set``.

A config is a plain ``dict`` with one entry per option of :data:`detnorm.config.options.OPTIONS`.
Sources are applied in order, the last one winning: the defaults < :data:`EMBEDDED_PRESET` (when
no source names a dataset) < ``--config`` files in the order given < flags < ``--set``.

A YAML file may name other files to load first with ``base: other.yaml`` (or a list), relative
to the file itself; that is how ``configs/`` scenarios state "the COCO base plus these deltas"
in one file. ``model_kwargs`` (extra torchvision ``MaskRCNN`` arguments) merges key by key;
every other key is replaced whole. Unknown keys are refused, naming the nearest valid key.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from detnorm.config.option import check
from detnorm.config.options import ALIASES, DEFAULTS, OPTIONS
from detnorm.config.presets import DATA_KEYS, EMBEDDED_PRESET
from detnorm.errors import ConfigError
from detnorm.io import atomic_write

__all__ = ["build_config", "load_yaml", "merge", "nearest_key", "validate", "write_yaml"]


def nearest_key(word: str, choices: Iterable[str] = OPTIONS) -> str:
    """The choice closest to ``word`` by ``difflib``; other trainers' names count as their key."""
    choices = list(choices)
    names = {c: c for c in choices}
    names.update({a: k for a, k in ALIASES.items() if k in names and a not in names})
    match = difflib.get_close_matches(word, list(names), n=1, cutoff=0.0)
    return names[match[0]] if match else choices[0]


def load_yaml(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read a config file (and its ``base`` files first) into a merged dict of known keys.

    Errors are ``ConfigError("config", ...)`` naming the file."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError("config", f"{path}: 'base' files form a cycle")
    if not path.is_file():
        raise ConfigError("config", f"file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(
            "config", f"{path}: not valid YAML ({' '.join(str(e).split())})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path}: must be a mapping of option: value")
    bases = data.pop("base", None) or []
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge(merged, load_yaml(path.parent / base, (*_seen, path.resolve())))
    for key in data:
        if key not in OPTIONS:
            raise ConfigError("config", f"{path}: unknown key {key!r}; did you mean "
                              f"{nearest_key(str(key))!r}? (keys: base, {', '.join(OPTIONS)})")  # fmt: skip
    return merge(merged, data)


def merge(base: dict, override: dict) -> dict:
    """``override`` wins key by key; ``model_kwargs`` dicts merge one level deep."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "model_kwargs" and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(config_files=(), overrides: dict | None = None, sets: dict | None = None) -> dict:
    """DEFAULTS < [EMBEDDED_PRESET] < each config file in order < ``overrides`` < ``sets``.

    Entries of ``overrides`` (the flags) that are None are ignored; ``sets`` (``--set``, see
    :mod:`detnorm.config.overrides`) may set None. :data:`EMBEDDED_PRESET` applies when no
    source names a dataset, i.e. when the run uses the embedded synthetic data.
    """
    files = [load_yaml(path) for path in config_files]
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    sets = sets or {}
    cfg = copy.deepcopy(DEFAULTS)
    if not any(src.get(k) is not None for src in (*files, flags, sets) for k in DATA_KEYS):
        cfg = merge(cfg, EMBEDDED_PRESET)
    for layer in files:
        cfg = merge(cfg, layer)
    cfg = merge(merge(cfg, flags), sets)
    validate(cfg)
    return cfg


def validate(cfg: dict, keys: Iterable[str] | None = None) -> None:
    """Raise ``ConfigError(key, ...)`` on the first unknown key or bad value.

    ``keys``: check only these (all of ``cfg`` by default)."""
    for key in cfg if keys is None else keys:
        if key not in OPTIONS:
            raise ConfigError(key, f"unknown config key; did you mean {nearest_key(key)!r}?")
        check(OPTIONS[key], cfg[key])


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as YAML to ``path`` atomically (:func:`detnorm.io.atomic_write`)."""
    return atomic_write(
        path, functools.partial(yaml.safe_dump, obj, sort_keys=False, default_flow_style=None)
    )
