"""docs/bad-inputs.md stays in step with the tests: every bad-input test is listed there, and
every test listed there exists.

A bad-input test is one marked ``@pytest.mark.bad_input`` (or in a module whose ``pytestmark``
is), or one whose name says it feeds a bad input (:data:`NAME`). The table names tests as
``tests/<path>.py::<test function>``.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-inputs.md"
NAME = re.compile(
    r"bad|refus|invalid|malformed|corrupt|unreadable|reject|error|unknown|wrong|mismatch|missing"
    r"|non_finite"
)
LISTED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _is_bad_input_mark(node: ast.expr) -> bool:
    node = node.func if isinstance(node, ast.Call) else node
    return isinstance(node, ast.Attribute) and node.attr == "bad_input"


def _marks(value: ast.expr) -> list[ast.expr]:
    return list(value.elts) if isinstance(value, (ast.List, ast.Tuple)) else [value]


def collect_tests() -> tuple[set[str], set[str]]:
    """``(every test function, the bad-input ones)``, as ``tests/x.py::test_name``."""
    every, bad = set(), set()
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        if path == Path(__file__).resolve():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_marked = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and any(_is_bad_input_mark(m) for m in _marks(node.value))
            for node in tree.body
        )
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                key = f"{path.relative_to(REPO).as_posix()}::{node.name}"
                every.add(key)
                marked = any(_is_bad_input_mark(d) for d in node.decorator_list)
                if module_marked or marked or NAME.search(node.name):
                    bad.add(key)
    return every, bad


def listed_tests() -> set[str]:
    return {f"{path}::{name}" for path, name in LISTED.findall(DOC.read_text(encoding="utf-8"))}


def test_every_bad_input_test_is_listed():
    _, bad = collect_tests()
    missing = sorted(bad - listed_tests())
    assert not missing, f"add these bad-input tests to {DOC.relative_to(REPO)}: {missing}"


def test_every_listed_test_exists():
    every, _ = collect_tests()
    gone = sorted(listed_tests() - every)
    assert not gone, f"{DOC.relative_to(REPO)} lists tests that do not exist: {gone}"


def test_the_checker_sees_marks_and_names(tmp_path):
    """The collector itself: a marked test, a module mark and a telling name all count."""
    every, bad = collect_tests()
    assert "tests/weights/test_safe_loading.py::test_eval_checkpoint_refuses" in bad  # decorator
    assert "tests/data/test_bad_images.py::test_duplicate_annotation_ids" in bad  # pytestmark
    assert "tests/cli/test_cli_train.py::test_bad_values_exit_2_with_one_line" in bad  # name
    assert "tests/weights/test_safe_loading.py::test_trust_weights_is_the_opt_in" in every - bad
