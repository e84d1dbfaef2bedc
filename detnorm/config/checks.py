"""Checks of option values that a type, a range or a list of choices cannot state.

Each is ``check(key, value) -> None`` and raises ``ConfigError(key, message)``; the option
records in :mod:`detnorm.config.options` name them in their ``extra`` field.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from detnorm.errors import ConfigError
from detnorm.weights.safe_load import WEIGHT_ALIASES

__all__ = [
    "LOGGER_PACKAGES",
    "color_jitter",
    "existing_dir",
    "existing_file",
    "loggers",
    "missing_package",
    "positive_ints",
    "pretrained",
    "pretrained_prefix",
    "resume",
    "scale_jitter",
]

# --logger name -> the package it needs (None: always available); detnorm.engine.loggers builds them
LOGGER_PACKAGES: dict[str, str | None] = {
    "csv": None,
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
}


def missing_package(name: str) -> str | None:
    """The package logger ``name`` needs when it is not installed, else None."""
    package = LOGGER_PACKAGES.get(name)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return package


def _numbers(value: Any, *, low: float | None = None) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (low is None or v >= low)
        for v in value
    )


def positive_ints(key: str, value: Any) -> None:
    """A non-empty list of positive integers (``train_scales``)."""
    ok = isinstance(value, (list, tuple)) and value and all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value
    )  # fmt: skip
    if not ok:
        raise ConfigError(key, f"must be a list of positive integers, got {value!r}")


def scale_jitter(key: str, value: Any) -> None:
    """[min, max] with 0 < min <= max."""
    if not (_numbers(value) and len(value) == 2 and 0 < value[0] <= value[1]):
        raise ConfigError(key, f"must be MIN MAX with 0 < MIN <= MAX, got {value!r}")


def color_jitter(key: str, value: Any) -> None:
    """true/false, or [brightness, contrast, saturation, hue], each >= 0 and hue <= 0.5."""
    if isinstance(value, bool):
        return
    if not (_numbers(value, low=0) and len(value) == 4 and value[3] <= 0.5):
        raise ConfigError(key, "must be on/off or BRIGHTNESS CONTRAST SATURATION HUE "
                          f"(each >= 0, hue <= 0.5), got {value!r}")  # fmt: skip


def loggers(key: str, value: Any) -> None:
    """A list of known logger names whose packages are installed (tensorboard may be missing:
    the run then skips it with a notice)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise ConfigError(key, f"must be a list of {', '.join(LOGGER_PACKAGES)}, got {value!r}")
    for name in value:
        if name not in LOGGER_PACKAGES:
            raise ConfigError(key, f"got {name!r}; allowed: {', '.join(LOGGER_PACKAGES)}")
        package = missing_package(name)
        if package and name != "tensorboard":
            raise ConfigError(key, f"{name}: the {package!r} package is not installed; "
                              f"install it (pip install {package}) or leave {name} out")  # fmt: skip


def pretrained(key: str, value: Any) -> None:
    """What ``detnorm.weights.load_weights`` accepts, checked offline."""
    text = str(value)
    if text == "none" or text in WEIGHT_ALIASES or urlparse(text).scheme in ("http", "https"):
        return
    if not Path(text).expanduser().is_file():
        raise ConfigError(key, f"got {value!r}; allowed: none, {', '.join(WEIGHT_ALIASES)}, an "
                          "http(s) URL, or an existing weights file")  # fmt: skip


def pretrained_prefix(key: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a key prefix such as 'module.encoder.', got {value!r}")


def existing_file(key: str, value: Any) -> None:
    if not Path(str(value)).expanduser().is_file():
        raise ConfigError(key, f"file not found: {value}")


def existing_dir(key: str, value: Any) -> None:
    if not Path(str(value)).expanduser().is_dir():
        raise ConfigError(key, f"directory not found: {value}")


def resume(key: str, value: Any) -> None:
    """``auto`` (the run's last.ckpt) or an existing checkpoint file."""
    if value != "auto":
        existing_file(key, value)
