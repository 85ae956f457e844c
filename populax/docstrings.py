"""Attribute docstrings (the string right after a dataclass field): where populax's settings document
themselves, read back for ``--help`` texts and ``populax algos``."""

from __future__ import annotations

import ast
import inspect
import textwrap


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass and its base classes (a subclass's own win); {} where the source
    cannot be read (a class defined in a notebook or ``python -c``)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # bases first, so a subclass's docstring replaces its base's
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs
