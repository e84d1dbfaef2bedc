"""``--set KEY=VALUE``: override any config key from the command line, nested keys dotted.

    --set base_lr=0.01 --set train_scales=[640,800] --set model_kwargs.box_detections_per_img=300

VALUE is read as YAML (``300`` an int, ``0.01`` a float, ``[a, b]`` a list, ``null`` None), then
typed by the option's type: a string key keeps the text as written (``--set
name=123`` names the run "123"), a float key turns ``1`` into ``1.0``, a list key turns a single
value into a one-item list. ``detnorm.config.load.validate`` then checks the value as it checks YAML.
Only ``model_kwargs`` has sub-keys; they must be keywords ``build_maskrcnn`` or torchvision's
``MaskRCNN`` accept. An unknown key is refused with the nearest valid one (``difflib``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

import yaml

from detnorm.config.load import nearest_key
from detnorm.config.options import OPTIONS
from detnorm.errors import ConfigError

__all__ = ["model_kwargs_keys", "parse_sets"]

# MaskRCNN/FasterRCNN arguments that the config sets elsewhere (or that are modules)
_NOT_KWARGS = {"self", "backbone", "num_classes", "kwargs"}


@functools.cache
def model_kwargs_keys() -> tuple[str, ...]:
    """Keys allowed under ``model_kwargs``: torchvision ``MaskRCNN``/``FasterRCNN`` keyword
    arguments (``box_detections_per_img``, ``rpn_batch_size_per_image``, ``min_size``, ...) and
    ``build_maskrcnn``'s ``fpn_channels``, ``box_fc_dim``, ``anchor_sizes``, ``rpn_conv_depth``."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    from detnorm.modeling.maskrcnn import build_maskrcnn

    builder = inspect.signature(build_maskrcnn).parameters.values()
    # build_maskrcnn's own keywords that are not options of their own (fpn_channels, ...)
    keys = dict.fromkeys(p.name for p in builder if p.kind is p.KEYWORD_ONLY
                         and p.name not in OPTIONS and p.name != "num_classes")  # fmt: skip
    for cls in (MaskRCNN, FasterRCNN):
        keys.update(dict.fromkeys(k for k in inspect.signature(cls).parameters
                                  if k not in _NOT_KWARGS))  # fmt: skip
    return tuple(keys)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _typed(key: str, text: str, value: Any) -> Any:
    kind = OPTIONS[key].type
    if value is None or kind is bool:
        return value
    if kind is str:
        return text if not isinstance(value, str) else value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and not isinstance(value, (list, dict)):
        return [value]
    return value


def parse_sets(items: Iterable[str]) -> dict:
    """``["KEY=VALUE", ...]`` -> a config layer (``model_kwargs`` as a nested dict).

    Values are typed by the option's type. Later items win. Raises ``ConfigError("set", ...)``
    naming the item.
    """
    layer: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("set", f"{item}: expected KEY=VALUE (e.g. base_lr=0.01)")
        top, dot, sub = key.partition(".")
        if top not in OPTIONS:
            raise ConfigError("set", f"{item}: unknown key {top!r}; did you mean "
                              f"{nearest_key(top)!r}?")  # fmt: skip
        value = _parse_value(text)
        if not dot:
            if top == "model_kwargs" and not isinstance(value, dict):
                raise ConfigError("set", f"{item}: model_kwargs takes a mapping, or use "
                                  "model_kwargs.KEY=VALUE")  # fmt: skip
            if top == "model_kwargs":
                for sub_key in value:
                    _check_sub(item, str(sub_key))
                layer.setdefault("model_kwargs", {}).update(value)
            else:
                layer[top] = _typed(top, text, value)
            continue
        if top != "model_kwargs":
            raise ConfigError("set", f"{item}: {top!r} has no sub-keys; only model_kwargs.KEY does")
        _check_sub(item, sub)
        layer.setdefault("model_kwargs", {})[sub] = value
    return layer


def _check_sub(item: str, sub: str) -> None:
    allowed = model_kwargs_keys()
    if sub not in allowed:
        raise ConfigError("set", f"{item}: unknown model_kwargs key {sub!r}; did you mean "
                          f"{nearest_key(sub, allowed)!r}?")  # fmt: skip
