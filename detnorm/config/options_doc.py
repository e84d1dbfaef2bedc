"""The README's table of ``detnorm-train`` options, generated from the option schema.

    python -m detnorm.config.options_doc README.md           # rewrite the table in place
    python -m detnorm.config.options_doc --check README.md   # exit 1 when it is out of date

The table sits between ``<!-- train-options:start -->`` and ``<!-- train-options:end -->``.
One row per option of :data:`detnorm.config.options.OPTIONS`, in its order: the flag (or
``--set KEY=...`` for options without one), the config key (what ``--set`` and YAML files use),
the default, what it accepts and its help. A test keeps the README equal to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from detnorm.config.options import OPTIONS
from detnorm.io import atomic_write

__all__ = ["END", "START", "options_table", "update"]

START, END = "<!-- train-options:start -->", "<!-- train-options:end -->"
_METAVARS = {int: "N", float: "X", str: "NAME"}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"`{text.removesuffix('...').strip()}`"


def _flag(opt) -> str:
    if not opt.flags:
        return f"--set {opt.key}=..."
    flag = opt.flags[0]
    if opt.cli in ("switch", "negate"):
        return flag
    metavar = opt.metavar or _METAVARS.get(opt.item or opt.type, "NAME")
    metavar = " ".join(metavar) if isinstance(metavar, tuple) else metavar
    suffix = {"list": " ...", "on_or_values": " ..."}.get(opt.cli, "")
    return (
        f"{flag} [{metavar}]"
        if opt.cli in ("optional", "on_or_values")
        else f"{flag} {metavar}{suffix}"
    )


def options_table() -> str:
    """Markdown: flag | config key | default | allowed | what it does, one row per option."""
    lines = ["| flag | config key | default | allowed | what it does |", "|---|---|---|---|---|"]
    for opt in OPTIONS.values():
        lines.append(f"| `{_cell(_flag(opt))}` | `{opt.key}` | {_cell(_default(opt.default))} "
                     f"| {_cell(opt.allowed())} | {_cell(opt.help)} |")  # fmt: skip
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
