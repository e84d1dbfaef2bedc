"""``Option``: one record per config key, the only place an option is defined.

A record holds the key, its default, its type and allowed values, its help text, the section of
the run it configures and how the command line spells it. Everything else reads the records:
validation (:func:`check`), the ``detnorm-train`` flags and ``--help`` (``detnorm.cli.parser``),
``--set`` typing (``detnorm.config.overrides``), ``DetnormModule``'s hyperparameters
(``module=True``) and the README's option table (``detnorm.config.options_doc``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detnorm.errors import ConfigError, check_int, check_number

__all__ = ["SECTIONS", "Option", "check"]

# what a section configures; every option belongs to one
SECTIONS = {
    "model": "the Mask R-CNN: a norm per component, depth, heads (DetnormModule hyperparameters)",
    "solver": "optimizer, LR schedule and the iteration budget",
    "hardware": "devices, batch and precision",
    "data": "dataset paths, resizing and augmentation",
    "run": "run folder, resuming, seeds, evaluation, checkpoints and logging",
}

# command-line forms: "value" (--flag V), "switch" (--flag sets True), "negate" (--no-flag sets
# False), "list" (--flag V [V ...]), "pair" (--flag A B), "on_or_values" (--flag alone: True;
# --flag V ...: the values), "optional" (--flag [V]; alone: `const`), None (YAML / --set only)
CLI_FORMS = ("value", "switch", "negate", "list", "pair", "on_or_values", "optional", None)


@dataclass(frozen=True)
class Option:
    """One config key.

    ``type`` is ``bool``, ``int``, ``float``, ``str``, ``list`` or ``dict`` (for ``list``,
    ``item`` is the element type the command line parses). ``choices``, ``low``/``high`` (with
    ``strict``: ``> low``) are checked by :func:`check`; ``none_ok`` (default: the default is
    None) allows ``null``; ``extra`` is a further check ``(key, value) -> None`` that raises
    ``ConfigError``. ``cli`` is the command-line form (see ``CLI_FORMS``), ``flag`` its spelling
    (default ``--key-with-dashes``; ``--no-key`` for ``negate``). ``module``: a hyperparameter of
    ``DetnormModule``, saved in every checkpoint.
    """

    key: str
    default: Any
    help: str
    section: str
    type: type = str
    item: type | None = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    strict: bool = False
    none_ok: bool | None = None
    extra: Callable[[str, Any], None] | None = None
    cli: str | None = "value"
    flag: str | None = None
    metavar: str | tuple[str, ...] | None = None
    const: Any = None
    module: bool = False

    def __post_init__(self):
        if self.section not in SECTIONS:
            raise ValueError(f"option {self.key}: unknown section {self.section!r}")
        if self.cli not in CLI_FORMS:
            raise ValueError(f"option {self.key}: unknown command-line form {self.cli!r}")

    @property
    def nullable(self) -> bool:
        return self.default is None if self.none_ok is None else self.none_ok

    @property
    def flags(self) -> tuple[str, ...]:
        """Command-line spellings (empty when the option is set through YAML or --set only)."""
        if self.cli is None:
            return ()
        if self.flag:
            return (self.flag,)
        dashed = self.key.replace("_", "-")
        return (f"--no-{dashed}",) if self.cli == "negate" else (f"--{dashed}",)

    def allowed(self) -> str:
        """What the option accepts, in words (for --help and the README)."""
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true, false"
        if self.type is int and self.low is not None:
            top = f", <= {self.high:g}" if self.high is not None else ""
            return f"integer >= {self.low:g}{top}"
        if self.type is float and self.low is not None:
            return f"number {'>' if self.strict else '>='} {self.low:g}"
        return ""


def check(opt: Option, value: Any) -> None:
    """Raise ``ConfigError(opt.key, ...)`` when ``value`` is not allowed for ``opt``."""
    key = opt.key
    if value is None:
        if opt.nullable:
            return
        raise ConfigError(key, f"must be set ({opt.allowed() or 'a value'}), got null")
    if opt.choices is not None:
        if value not in opt.choices or isinstance(value, bool) != (opt.type is bool):
            raise ConfigError(key, f"got {value!r}; allowed: {opt.allowed()}")
    elif opt.type is bool:
        if value not in (True, False) or not isinstance(value, bool):
            raise ConfigError(key, f"got {value!r}; allowed: true, false")
    elif opt.type is int and opt.low is not None:
        check_int(key, value, int(opt.low), None if opt.high is None else int(opt.high))
    elif opt.type is float and opt.low is not None:
        check_number(key, value, low=opt.low, strict=opt.strict)
    elif opt.type is dict and not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {value!r}")
    if opt.extra is not None:
        opt.extra(key, value)
