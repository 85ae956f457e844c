"""The layers of docs/design.md ("The member loop, written once") hold: the member loop imports no backend, no
backend imports another's internals or the runtime above it (lazy imports included)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "populax"


def imported_modules(path: Path) -> set[str]:
    """Every populax module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "populax"}


# (package, the populax modules it must not import: anything at or below these prefixes)
RULES = [
    ("loop", ("populax.backends", "populax.runtime", "populax.strategies")),
    ("backends/compiled", ("populax.backends.host", "populax.backends.cluster", "populax.runtime",
                           "populax.strategies")),
    ("backends/host", ("populax.backends.compiled", "populax.backends.cluster", "populax.runtime",
                       "populax.strategies")),
    ("backends/cluster", ("populax.runtime", "populax.strategies")),
    ("member.py", ("populax.backends", "populax.runtime", "populax.strategies")),
    ("strategies", ("populax.backends", "populax.runtime")),
]


@pytest.mark.parametrize("package, forbidden", RULES, ids=[package for package, _ in RULES])
def test_a_layer_imports_only_what_is_below_it(package, forbidden):
    root = PACKAGE / package
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    assert files, package
    wrong = {f"{path.relative_to(PACKAGE)} -> {name}" for path in files for name in imported_modules(path)
             if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)}
    assert not wrong, sorted(wrong)
