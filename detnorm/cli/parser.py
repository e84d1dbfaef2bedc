"""What every detnorm command line shares: the parser, flags made from the option schema, and
one-line errors that name the flag.

``add_option_flags(parser, keys)`` adds the flags of those options of
:data:`detnorm.config.options.OPTIONS`, spelled, typed and explained as the records say;
``flag_label(key)`` is how an error names an option (``--gn-groups``, ``--config``, or the config
key for options that have no flag of their own); ``error_line(prog, e)`` is the one line a
command prints for a ``ConfigError`` or a ``UsageError``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from detnorm.config.options import OPTIONS
from detnorm.errors import ConfigError

__all__ = ["Parser", "UsageError", "add_option_flags", "error_line", "flag_label"]

# keys that front ends use for their own arguments (not options of a run)
_CLI_KEYS = {"config": "--config", "set": "--set", "checkpoint": "--checkpoint"}


class UsageError(Exception):
    """A bad command line (argparse's message, which names the flag)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors raised as :class:`UsageError` (no usage dump, no exit)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


class _OnOrValues(argparse.Action):
    """``--flag`` alone stores True; ``--flag V1 V2 ...`` stores the list of values."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(values) if values else True)


def _help(key: str) -> str:
    opt = OPTIONS[key]
    text = opt.help.replace("%", "%%")
    if opt.cli == "negate":  # the flag turns the option off
        return f"turn off: {text}"
    if opt.cli == "switch" or opt.default in (None, [], {}):
        return text
    default = " ".join(map(str, opt.default)) if isinstance(opt.default, list) else opt.default
    return f"{text} (default: {default})"


def add_option_flags(parser: argparse.ArgumentParser, keys: Iterable[str] | None = None) -> None:
    """Add the command-line flags of ``keys`` (default: every option that has one).

    Every flag defaults to None (not given), so config files and defaults show through."""
    for key in OPTIONS if keys is None else keys:
        opt = OPTIONS[key]
        if not opt.flags:
            continue
        kw: dict = {"dest": key, "help": _help(key), "default": None}
        if opt.cli == "switch":
            kw.update(action="store_const", const=True)
        elif opt.cli == "negate":
            kw.update(action="store_const", const=False)
        elif opt.cli == "list":
            kw.update(type=opt.item, nargs="+", metavar=opt.metavar)
        elif opt.cli == "pair":
            kw.update(type=opt.item, nargs=2, metavar=opt.metavar)
        elif opt.cli == "on_or_values":
            kw.update(type=opt.item, nargs="*", action=_OnOrValues, metavar=opt.metavar)
        elif opt.cli == "optional":
            kw.update(nargs="?", const=opt.const, metavar=opt.metavar)
        else:
            metavar = opt.metavar or {int: "N", float: "X"}.get(opt.type, "NAME")
            kw.update(type=opt.type, metavar=metavar)
        parser.add_argument(*opt.flags, **kw)


def flag_label(key: str) -> str:
    """How the command line names option ``key``: its flag, or the key when it has none."""
    if key in _CLI_KEYS:
        return _CLI_KEYS[key]
    opt = OPTIONS.get(key)
    if opt is not None and opt.cli not in (None, "negate"):  # --no-X would name the opposite
        return opt.flags[0]
    return key


def error_line(prog: str, error: BaseException) -> str:
    """``prog: error: --flag: message`` for a ConfigError, ``prog: error: message`` otherwise."""
    if isinstance(error, ConfigError):
        return f"{prog}: error: {flag_label(error.key)}: {error.message}"
    return f"{prog}: error: {error}"
