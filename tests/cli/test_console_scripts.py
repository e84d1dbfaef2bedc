"""Every tool is a console script: pyproject names it, the installed metadata agrees, each
``tools/*.py`` shim calls the same function, and ``--help`` works through the entry point."""

import ast
import importlib.util
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SECTION = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
SCRIPTS = dict(
    re.findall(r'^([\w-]+) = "([\w.:]+)"$', _SECTION, re.MULTILINE)
)  # no tomllib on 3.10
EXPECTED = {"detnorm-train", "detnorm-eval", "detnorm-predict", "detnorm-compare",
            "detnorm-export", "detnorm-convert-labelme", "detnorm-convert-masks",
            "detnorm-pretrain", "detnorm-analyze", "detnorm-inspect"}  # fmt: skip
# tools that run applications of the toolkit from a clone, not installed with the package
APPLICATIONS = {"study.py": "reproduction.cli:main"}


def test_every_tool_has_a_console_script():
    assert set(SCRIPTS) == EXPECTED
    targets = set(SCRIPTS.values())
    shims = sorted(p for p in (ROOT / "tools").glob("*.py"))
    assert len(shims) >= 10
    for shim in shims:
        tree = ast.parse(shim.read_text())
        imports = [f"{n.module}:{a.name}" for n in ast.walk(tree)
                   if isinstance(n, ast.ImportFrom) and n.module.startswith(("detnorm", "reproduction"))
                   for a in n.names]  # fmt: skip
        allowed = {APPLICATIONS[shim.name]} if shim.name in APPLICATIONS else targets
        assert len(imports) == 1 and imports[0] in allowed, f"{shim.name}: {imports}"
        assert len(shim.read_text().splitlines()) <= 20, f"{shim.name} is more than a shim"


def test_installed_entry_points_match_pyproject():
    installed = {ep.name: ep.value for ep in entry_points(group="console_scripts")
                 if ep.name.startswith("detnorm-")}  # fmt: skip
    assert installed == SCRIPTS, "reinstall: .venv/bin/python -m pip install --no-deps -e ."


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_help_through_the_entry_point(name, capsys):
    (ep,) = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
    if importlib.util.find_spec(ep.module) is None:
        pytest.fail(f"{name}: module {ep.module} does not exist")
    with pytest.raises(SystemExit) as exit_info:
        ep.load()(["--help"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out
