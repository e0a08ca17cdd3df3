"""No stage imports a later one: frontend -> passes -> backends, all on the core (kiln/)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"frontend": ("kiln.passes", "kiln.backends"), "passes": ("kiln.backends", "kiln.frontend")}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at top level or inside functions (lazy imports count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_a_stage_does_not_import_a_later_one(stage):
    bad = [f"{path.relative_to(ROOT)}:{line}: {module}" for path in sorted((ROOT / stage).rglob("*.py"))
           for line, module in _imports(path) if module.startswith(FORBIDDEN[stage])]
    assert not bad, bad
    assert list((ROOT / stage).rglob("*.py"))  # the stage's folder was found


def test_the_core_imports_no_stage_at_module_level():
    """kiln/ (the core) may reach a stage only lazily, inside a function (the driver, the CLI and
    kiln/op_traits.py's registry load do); annotations and op_traits are imported by every stage."""
    for name in ("annotations.py", "op_traits.py", "ir_utils.py", "precision.py", "quant.py"):
        tree = ast.parse((ROOT / "kiln" / name).read_text())
        top = [n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in tree.body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not [m for m in top if m and m.startswith(("kiln.frontend", "kiln.passes", "kiln.backends"))], name
