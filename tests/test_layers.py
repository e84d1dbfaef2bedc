"""The package's layers (docs/architecture.md): no module imports from a higher layer, at the top
of the file or inside a function; every module sits in a known layer; files stay small."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "detnorm"

# bottom to top; a module may import its own layer and the ones below
LAYERS = {
    "errors": 0, "io": 0,
    "layers": 1,
    "modeling": 2, "solver": 2, "data": 2, "evaluation": 2, "analysis": 2,
    "weights": 3,
    "config": 4,
    "engine": 5,
    "inference": 6,
    "cli": 7,
}  # fmt: skip
# the package's front door and the old import paths re-export from above
FACADES = {"__init__", "model", "norm"}


def _unit(module: str) -> str:
    """``detnorm.engine.run`` -> ``engine``; ``detnorm.io`` -> ``io``."""
    return module.split(".")[1] if module.count(".") else module


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "detnorm":
                found += [(node.lineno, f"detnorm.{a.name}") for a in node.names]
            elif node.module.startswith("detnorm."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("detnorm.")]
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path):
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py")
    if own in FACADES and len(rel.parts) == 1:
        return
    assert own in LAYERS, f"{rel}: not in a known layer; add it to LAYERS and docs/architecture.md"
    for line, module in _imports(path):
        target = _unit(module)
        assert target in LAYERS, f"{rel}:{line} imports {module}, which is in no layer"
        assert LAYERS[target] <= LAYERS[own], (
            f"{rel}:{line} imports {module}: {target} (layer {LAYERS[target]}) is above "
            f"{own} (layer {LAYERS[own]})"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 320, f"{path.relative_to(PACKAGE)} has {lines} lines; split it by concern"


def test_the_layer_check_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from detnorm.cli.train import main\n    import detnorm.engine.run\n"
    )
    assert [m for _, m in _imports(probe)] == ["detnorm.cli.train", "detnorm.engine.run"]
