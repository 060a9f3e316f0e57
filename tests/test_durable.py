"""The one atomic folder commit (`lookalike.durable.atomic_folder`): a folder appears whole or not
at all, an existing one stays intact until its replacement is complete, and a full disk is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import small_tmpfs

from lookalike.durable import atomic_folder, remove_temporaries
from lookalike.errors import StorageFull


def _old_folder(parent: Path) -> Path:
    old = parent / "thing"
    old.mkdir(parents=True)
    (old / "a.txt").write_text("old a")
    return old


def test_a_commit_makes_the_whole_folder_appear_and_leaves_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "thing"
    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("new a")
        assert not final.exists()  # nothing visible before the block ends
    assert (final / "a.txt").read_text() == "new a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def test_a_failure_mid_write_leaves_no_partial_folder_and_the_old_one_intact(
    tmp_path: Path,
) -> None:
    old = _old_folder(tmp_path)
    with pytest.raises(RuntimeError, match="killed mid-write"), atomic_folder(old, True) as tmp:
        (tmp / "a.txt").write_text("new a")
        raise RuntimeError("killed mid-write")
    assert (old / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]  # no temporary, no retired


def test_replace_swaps_the_folder_whole_and_removes_the_old_one(tmp_path: Path) -> None:
    old = _old_folder(tmp_path)
    with atomic_folder(old, replace=True) as tmp:
        (tmp / "b.txt").write_text("new b")
    assert sorted(p.name for p in old.iterdir()) == ["b.txt"]  # the old file went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def test_an_existing_folder_is_never_overwritten_without_replace(tmp_path: Path) -> None:
    old = _old_folder(tmp_path)
    with pytest.raises(OSError), atomic_folder(old) as tmp:
        (tmp / "a.txt").write_text("new a")
    assert (old / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def test_a_full_disk_mid_write_is_storage_full_and_gives_the_space_back(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        old = _old_folder(disk)
        with pytest.raises(StorageFull, match="no space left"), atomic_folder(old, True) as tmp:
            (tmp / "big.bin").write_bytes(os.urandom(2 * 2**20))
        assert (old / "a.txt").read_text() == "old a"
        assert sorted(p.name for p in disk.iterdir()) == ["thing"]


def test_temporaries_a_dead_writer_left_are_removed(tmp_path: Path) -> None:
    old = _old_folder(tmp_path)
    committing = atomic_folder(tmp_path / "next")
    tmp = committing.__enter__()  # a writer that dies here never leaves its block
    (tmp / "a.txt").write_text("half")
    remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.name]
