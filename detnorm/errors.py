"""``ConfigError``: a bad option value, raised where it is found, carrying the option's key.

Every layer (norm layers, model builders, data, weights, config validation) raises
``ConfigError(key, message)`` with the config key at fault (``"gn_groups"``, ``"train_ann"``,
``"model_kwargs.anchor_sizes"``). The message says what is wrong and what is allowed, without the
option's name; a front end adds the name in its own spelling: the CLI prints the flag
(``--gn-groups: ...``), ``str(e)`` gives the key (``gn_groups: ...``). Nothing reads the message to
find the option.

This module imports nothing from detnorm, so the lowest layer can use it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "check_int", "check_number"]


class ConfigError(ValueError):
    """A bad option value: ``key`` is the config key, ``message`` the rest of the line.

    A ``ValueError``, so Python callers that catch ``ValueError`` keep working.
    """

    def __init__(self, key: str, message: str):
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


def check_int(key: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) in ``[low, high]``, else raise ConfigError."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ConfigError(key, f"must be {allowed}, got {value!r}")
    return value


def check_number(key: str, value: Any, *, low: float = 0.0, strict: bool = False) -> float:
    """Return ``value`` if it is a finite number ``> low`` (``strict``) or ``>= low``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and value != float("inf") and (value > low if strict else value >= low)
    if not ok:
        what = "a positive number" if strict and low == 0 else f"a number >= {low:g}"
        raise ConfigError(key, f"must be {what}, got {value!r}")
    return float(value)
