"""`Calibration.bound`: every value the code can produce is documented (in `BOUNDS`, the class's
docstring and the HTTP schema's description), and nothing documented is never produced."""

from __future__ import annotations

import ast
import inspect

import pytest

from lookalike.index import calibrate
from lookalike.index.calibrate import BOUNDS, Calibration
from lookalike.server.schemas import Calibration as CalibrationSchema


def produced_bounds() -> set[str]:
    """The string constants the calibration code gives as a bound: `bound=` arguments and the
    bound `_pick` returns beside its threshold."""
    tree = ast.parse(inspect.getsource(calibrate))
    found: set[str] = set()

    def strings(node: ast.AST) -> set[str]:
        return {
            n.value
            for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }

    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "bound":
            found |= strings(node.value)
        if isinstance(node, ast.FunctionDef) and node.name == "_pick":
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                    found |= strings(ret.value.elts[1])
    return found


def test_every_bound_the_code_produces_is_documented_and_no_other() -> None:
    produced = produced_bounds()
    assert produced == set(BOUNDS)
    described = CalibrationSchema().fields["bound"].metadata["description"]
    for bound in BOUNDS:
        assert f"{bound}:" in described or f"{bound} /" in described or f"/ {bound}:" in described
        assert f'"{bound}"' in (Calibration.__doc__ or "")
    assert "distinct:" not in described  # an older version's bound, no longer produced


def test_an_undocumented_bound_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="unknown calibration bound 'distinct'"):
        Calibration(0.1, "distinct", "embedding", "", "f", 10, 5, {}, {}, {}, 1.0, "now")
