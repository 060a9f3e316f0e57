"""Fixtures of the reliability suite: collections made with the tiny real model."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY

from lookalike.embedder import get_backbone
from lookalike.store.collection import Collection


@pytest.fixture(scope="session")
def tiny_spec():
    with get_backbone(**TINY) as backbone:
        return backbone.spec


@pytest.fixture
def empty_collection(tmp_path: Path, tiny_spec) -> Path:
    """A fresh collection of the tiny model's spec, with no items and no index yet."""
    return Collection.create(tmp_path / "c", tiny_spec).path
