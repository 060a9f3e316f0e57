"""What a user sees on the terminal: each long phase shows progress, and third-party libraries
do not print their internals (UMAP's repr with its arrays, numba or scikit-learn warnings). The
commands run as a user runs them, in a subprocess, so that prints and warnings from any library
reach the real stdout and stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import make_collection, separable

# Lines only a library's own output holds: UMAP's verbose repr and timestamps, numpy arrays,
# Python's warnings.
CHATTER = ("UMAP(", "array(", "Construct fuzzy", "epochs", "Warning:", "warnings.warn")


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "lookalike", *arguments], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def chatter_in(done: subprocess.CompletedProcess) -> list[str]:
    lines = (done.stdout + done.stderr).replace("\r", "\n").splitlines()
    return [line for line in lines if any(mark in line for mark in CHATTER)]


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """Three separable classes of synthetic vectors."""
    vectors, labels = separable(40)
    return make_collection(tmp_path / "c", labels, vectors).path


def test_map_shows_its_steps_and_not_umaps_internals(labelled: Path) -> None:
    done = run_cli("map", "-c", str(labelled))
    assert not chatter_in(done), chatter_in(done)[:5]
    assert "map: 100%" in done.stderr and "umap" in done.stderr  # the bar named the last step
    assert "laid out 120 items" in done.stdout
