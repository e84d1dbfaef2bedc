"""The README's table of ``detnorm-train`` options, generated from the parser and the defaults.

    python -m detnorm.config.options_doc README.md           # rewrite the table in place
    python -m detnorm.config.options_doc --check README.md   # exit 1 when it is out of date

The table sits between ``<!-- train-options:start -->`` and ``<!-- train-options:end -->``.
One row per flag: the flag, its config key (what ``--set`` and YAML files use), the default in
:data:`detnorm.config.DEFAULTS`, and the flag's help. A test keeps the README equal to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from detnorm.config import DEFAULTS
from detnorm.io import atomic_write

__all__ = ["END", "START", "options_table", "update"]

START, END = "<!-- train-options:start -->", "<!-- train-options:end -->"
# config keys without a flag of their own (YAML or --set KEY=VALUE)
KEY_HELP = {
    "input_format": "rgb or caffe2 (null: rgb, or what the pretrained weights need)",
    "stride_in_1x1": "stride in the 1x1 convs (null: false, or what caffe2 weights need)",
    "model_kwargs": "extra torchvision MaskRCNN / build_maskrcnn keywords (RPN/RoI sampling, "
    "anchor_sizes, fpn_channels, ...); merged key by key",
    "warmup_factor": "LR factor at the first warmup step",
    "weight_decay": "weight decay of every parameter but the norms'",
    "norm_weight_decay": "weight decay of norm parameters",
    "momentum": "SGD momentum",
}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(key: str | None) -> str:
    if key not in DEFAULTS:
        return ""
    value = yaml.safe_dump(DEFAULTS[key], default_flow_style=True).strip()
    return f"`{value.removesuffix('...').strip()}`"


def options_table() -> str:
    """Markdown: flag | config key | default | what it does, for every ``detnorm-train`` flag."""
    from detnorm.cli.train import build_parser

    lines = ["| flag | config key | default | what it does |", "|---|---|---|---|"]
    seen: set[str] = set()
    for action in build_parser()._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        if action.nargs != 0:
            metavar = action.metavar or {int: "N", float: "X"}.get(action.type, "NAME")
            metavar = " ".join(metavar) if isinstance(metavar, tuple) else metavar
            flag += f" {metavar}" + (" ..." if action.nargs in ("+", "*") else "")
        key = action.dest if action.dest in DEFAULTS else None
        help_ = (action.help or "").replace("%%", "%")
        lines.append(f"| `{_cell(flag)}` | {f'`{key}`' if key else ''} | {_cell(_default(key))} "
                     f"| {_cell(help_)} |")  # fmt: skip
        seen.add(action.dest)
    for key in DEFAULTS:
        if key not in seen:
            lines.append(f"| `--set {key}=...` | `{key}` | {_cell(_default(key))} "
                         f"| {_cell(KEY_HELP.get(key, ''))} |")  # fmt: skip
    return "\n".join(lines)


def _split(text: str, path: Path) -> tuple[str, str]:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{path}: needs one {START} ... {END} block")
    head, rest = text.split(START)
    return head, rest.split(END)[1]


def update(path: str | Path, *, check: bool = False) -> bool:
    """Rewrite the table in ``path`` (or, with ``check``, only compare); True if it was current."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, tail = _split(text, path)
    new = f"{head}{START}\n{options_table()}\n{END}{tail}"
    if new == text:
        return True
    if not check:
        atomic_write(path, lambda f: f.write(new))
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detnorm.config.options_doc", description=__doc__)
    p.add_argument("readme", type=Path)
    p.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = p.parse_args(argv)
    try:
        current = update(args.readme, check=args.check)
    except (OSError, ValueError) as e:
        print(f"options_doc: error: {e}", file=sys.stderr)
        return 2
    if not current:
        print(
            f"{args.readme}: the options table " + ("is out of date" if args.check else "updated")
        )
    return 1 if args.check and not current else 0


if __name__ == "__main__":
    sys.exit(main())
