"""``raises_option(pattern)``: a ConfigError, matched as the command line shows it
(``--flag: message``, the flag made from the error's key)."""

import contextlib
import re

import pytest

from detnorm.cli.parser import flag_label
from detnorm.errors import ConfigError


def shown(error: ConfigError) -> str:
    """The error as ``detnorm-train`` prints it after ``error: ``."""
    return f"{flag_label(error.key)}: {error.message}"


@contextlib.contextmanager
def raises_option(pattern: str):
    with pytest.raises(ConfigError) as info:
        yield info
    assert re.search(pattern, shown(info.value)), shown(info.value)
