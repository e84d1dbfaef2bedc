"""A run's configuration: the option schema, presets, YAML files that stack, and validation.

* :mod:`detnorm.config.option`: the ``Option`` record and its value check;
* :mod:`detnorm.config.options`: every option, defined once (:data:`OPTIONS`, :data:`DEFAULTS`);
* :mod:`detnorm.config.checks`: checks a type or a range cannot state (paths, jitter, loggers);
* :mod:`detnorm.config.presets`: :data:`EMBEDDED_PRESET`, the main job's CPU-sized recipe;
* :mod:`detnorm.config.load`: defaults < preset < YAML files < flags < ``--set``;
* :mod:`detnorm.config.overrides`: ``--set KEY=VALUE``;
* :mod:`detnorm.config.options_doc`: the README's option table.

Errors are :class:`detnorm.errors.ConfigError` carrying the option's key.
"""

from detnorm.config.load import build_config, load_yaml, merge, nearest_key, validate, write_yaml
from detnorm.config.options import DEFAULTS, MODULE_KEYS, OPTIONS
from detnorm.config.presets import DATA_KEYS, EMBEDDED_PRESET
from detnorm.errors import ConfigError

__all__ = [
    "DATA_KEYS",
    "DEFAULTS",
    "EMBEDDED_PRESET",
    "MODULE_KEYS",
    "OPTIONS",
    "ConfigError",
    "build_config",
    "load_yaml",
    "merge",
    "nearest_key",
    "validate",
    "write_yaml",
]
