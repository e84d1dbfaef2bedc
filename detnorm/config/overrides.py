"""``--set KEY=VALUE``: override any config key from the command line, nested keys dotted.

    --set base_lr=0.01 --set train_scales=[640,800] --set model_kwargs.box_detections_per_img=300

VALUE is read as YAML (``300`` an int, ``0.01`` a float, ``[a, b]`` a list, ``null`` None), then
typed by the key's default and its flag: a string key keeps the text as written (``--set
name=123`` names the run "123"), a float key turns ``1`` into ``1.0``, a list key turns a single
value into a one-item list. ``detnorm.config.validate`` then checks the value as it checks YAML.
Only ``model_kwargs`` has sub-keys; they must be keywords ``build_maskrcnn`` or torchvision's
``MaskRCNN`` accept. An unknown key is refused with the nearest valid one (``difflib``).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from detnorm.config import DEFAULTS, ConfigError

__all__ = ["model_kwargs_keys", "parse_sets"]

# build_maskrcnn's own keywords that a config passes through model_kwargs
_BUILDER_KEYS = ("rpn_conv_depth", "fpn_channels", "box_fc_dim", "anchor_sizes")
# MaskRCNN/FasterRCNN arguments that the config sets elsewhere (or that are modules)
_NOT_KWARGS = {"self", "backbone", "num_classes", "kwargs"}


@functools.cache
def model_kwargs_keys() -> tuple[str, ...]:
    """Keys allowed under ``model_kwargs``: torchvision ``MaskRCNN``/``FasterRCNN`` keyword
    arguments (``box_detections_per_img``, ``rpn_batch_size_per_image``, ``min_size``, ...) and
    ``build_maskrcnn``'s ``fpn_channels``, ``box_fc_dim``, ``anchor_sizes``, ``rpn_conv_depth``."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    keys = dict.fromkeys(_BUILDER_KEYS)
    for cls in (MaskRCNN, FasterRCNN):
        keys.update(dict.fromkeys(k for k in inspect.signature(cls).parameters
                                  if k not in _NOT_KWARGS))  # fmt: skip
    return tuple(keys)


# what other trainers call some keys (detectron2, torchvision references, Lightning), so that the
# nearest key of ``--set learning_rate=...`` is base_lr
_ALIASES = {
    "lr": "base_lr",
    "learning_rate": "base_lr",
    "epochs": "max_epochs",
    "max_iter": "max_steps",
    "iterations": "max_steps",
    "wd": "weight_decay",
    "ims_per_batch": "batch_size",
    "grad_accum": "accumulate_grad_batches",
    "detections_per_img": "max_detections",
    "opt": "optimizer",
    "lr_scheduler": "lr_schedule",
}


def _nearest(word: str, choices: Iterable[str]) -> str:
    """The choice closest to ``word`` by ``difflib`` (aliases count as their key)."""
    choices = list(choices)
    names = {c: c for c in choices}
    names.update({a: k for a, k in _ALIASES.items() if k in names and a not in names})
    match = difflib.get_close_matches(word, list(names), n=1, cutoff=0.0)
    return names[match[0]] if match else choices[0]


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _typed(key: str, text: str, value: Any, flag_type: type | None) -> Any:
    default = DEFAULTS[key]
    if value is None or isinstance(default, bool):
        return value
    if isinstance(default, str) or (default is None and flag_type is str):
        return text if not isinstance(value, str) else value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list) and not isinstance(value, (list, dict)):
        return [value]
    return value


def parse_sets(items: Iterable[str], types: Mapping[str, type] | None = None) -> dict:
    """``["KEY=VALUE", ...]`` -> a config layer (``model_kwargs`` as a nested dict).

    ``types``: the command-line flag type of each key (``detnorm.cli.train``), used for keys whose
    default is None. Later items win. Raises :class:`ConfigError` naming the item.
    """
    types = types or {}
    layer: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE (e.g. base_lr=0.01)")
        top, dot, sub = key.partition(".")
        if top not in DEFAULTS:
            raise ConfigError(f"--set {item}: unknown key {top!r}; did you mean "
                              f"{_nearest(top, DEFAULTS)!r}?")  # fmt: skip
        value = _parse_value(text)
        if not dot:
            if top == "model_kwargs" and not isinstance(value, dict):
                raise ConfigError(f"--set {item}: model_kwargs takes a mapping, or use "
                                  "model_kwargs.KEY=VALUE")  # fmt: skip
            if top == "model_kwargs":
                for sub_key in value:
                    _check_sub(item, str(sub_key))
                layer.setdefault("model_kwargs", {}).update(value)
            else:
                layer[top] = _typed(top, text, value, types.get(top))
            continue
        if top != "model_kwargs":
            raise ConfigError(f"--set {item}: {top!r} has no sub-keys; only model_kwargs.KEY does")
        _check_sub(item, sub)
        layer.setdefault("model_kwargs", {})[sub] = value
    return layer


def _check_sub(item: str, sub: str) -> None:
    allowed = model_kwargs_keys()
    if sub not in allowed:
        raise ConfigError(f"--set {item}: unknown model_kwargs key {sub!r}; did you mean "
                          f"{_nearest(sub, allowed)!r}?")  # fmt: skip
