"""Cells of a feature matrix: one per path in the default suite, the rest marked ``extended``."""

from collections.abc import Callable, Iterable

import pytest


def matrix_cells(cells: Iterable[tuple], default: set[tuple[str, str]], cell_id: Callable[[tuple], str]) -> list:
    """``cells`` (tuples starting with algorithm and environment id) as pytest params named ``cell_id(cell)``.
    A cell whose (algorithm, environment) is in ``default`` runs in the default suite; the others are marked
    ``extended`` (``make test-extended``; ``.ci/run`` runs them after the default suite)."""
    return [pytest.param(*cell, id=cell_id(cell), marks=() if cell[:2] in default else pytest.mark.extended)
            for cell in cells]
