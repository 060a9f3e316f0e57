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


@pytest.mark.slow
def test_map_shows_its_steps_and_not_umaps_internals(labelled: Path) -> None:
    done = run_cli("map", "-c", str(labelled))
    assert not chatter_in(done), chatter_in(done)[:5]
    assert "map: 100%" in done.stderr and "umap" in done.stderr  # the bar named the last step
    assert "laid out 120 items" in done.stdout


TINY_MODEL = ("--backbone", "resnet18", "--weights", "none", "--image-size", "64")


@pytest.mark.slow
def test_probe_shows_loading_and_fitting(digit_dir: Path) -> None:
    """The fits after the embedding pass took most of a probe's time with nothing shown."""
    done = run_cli("probe", str(digit_dir), *TINY_MODEL, "--folds", "2")
    assert not chatter_in(done), chatter_in(done)[:5]
    assert "loading the backbone" in done.stderr
    assert "fitting probes: 100%" in done.stderr
    assert "logistic-regression probe" in done.stdout


@pytest.mark.slow  # a fine-tuning run: about 40 s on 2 cores
def test_finetune_shows_its_frozen_baseline_and_validation_passes(
    digit_dir: Path, tmp_path: Path
) -> None:
    """The frozen baseline's two passes ran silently before the first batch."""
    done = run_cli(
        "finetune",
        str(digit_dir),
        "--labels-from-folders",
        *TINY_MODEL,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "run"),
    )
    assert not chatter_in(done), chatter_in(done)[:5]
    # each phase shows its bar (a bar that ends between two refreshes is cleared without a
    # "100%" frame: leave=False, so only its start is certain)
    for phase in ("frozen baseline: training split", "frozen baseline: validation split"):
        assert f"\n{phase}:" in done.stderr, phase
    assert "\nvalidation:" in done.stderr
    assert "best: epoch 1" in done.stdout


@pytest.mark.slow
def test_embed_and_audit_print_no_library_chatter(digit_dir: Path, tmp_path: Path) -> None:
    collection = str(tmp_path / "c")
    embedded = run_cli(
        "embed", str(digit_dir), "-c", collection, *TINY_MODEL, "--labels-from-folders"
    )
    audited = run_cli("audit", "-c", collection)
    assert not chatter_in(embedded) and not chatter_in(audited), chatter_in(audited)[:5]
    assert "audit of" in audited.stdout
