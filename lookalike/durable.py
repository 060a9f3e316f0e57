"""Durability helpers: one atomic write (a file: `atomic_path`; a folder: `atomic_folder`), one
durable append, fsync, exclusive locks, and a full disk or a read-only one named as such
(`StorageFull`, `StorageReadOnly`). Every file the project writes goes through them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lookalike.errors import CollectionError, StorageFull, StorageReadOnly

log = logging.getLogger(__name__)

READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)  # a read-only mount, or no permission


def acquire_lock(
    path: Path, wait: float = 0.0, on_wait: Callable[[], None] | None = None, what: str = "written"
):
    """An exclusive flock on `path`, retried for up to `wait` seconds (`math.inf`: until it is
    free); CollectionError after. `on_wait()` is called once if the lock is not free at once."""
    with disk_errors(path.parent):
        handle = open(path, "a+")  # noqa: SIM115 - held open for the writer's lifetime
    deadline, pause = time.monotonic() + wait, 0.005
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise CollectionError(f"{path.parent} is being {what} by another process") from None
            if on_wait is not None and pause == 0.005:
                on_wait()
            pause = min(pause * 2, 0.2)
            time.sleep(pause)


@contextlib.contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """A full disk or quota as `StorageFull`, naming the folder and the space left; a read-only
    file system (or a refused permission) as `StorageReadOnly`; other `OSError`s as they are.
    (NumPy reports a short write as "N requested and M written".)"""
    try:
        yield
    except OSError as error:
        if error.errno in READ_ONLY:
            raise StorageReadOnly(
                f"the file system holding {path} refuses writes ({error.strerror}): nothing was "
                "written; mount it writable (or give write permission) and retry"
            ) from error
        full = error.errno in (errno.ENOSPC, errno.EDQUOT) or (
            error.errno is None and "requested and" in str(error)
        )
        if not full:
            raise
        try:
            free = f"{shutil.disk_usage(path).free:,} bytes free"
        except OSError:
            free = "free space unknown"
        raise StorageFull(
            f"no space left on the device holding {path} ({free}): nothing was acknowledged "
            "by this write; free some space and retry"
        ) from error


def store_if_possible(save: Callable[[], object], what: str) -> bool:
    """Run `save`, the write of a result that can be made again (a calibration, an audit, an
    index); on a full or read-only disk, log a warning that `what` was not stored and return
    False: the caller answers with the result all the same."""
    try:
        save()
    except (StorageFull, StorageReadOnly) as error:
        log.warning("%s was not stored: %s", what, error)
        return False
    return True


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durably(path: Path, lines: str) -> None:
    """Append whole lines and fsync; a line torn by an earlier crash is closed off first, and a
    new file is made durable in its folder."""
    created = not path.exists()
    with disk_errors(path.parent), open(path, "a+b") as handle:
        size = handle.tell()
        if size > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                lines = "\n" + lines
        try:
            handle.write(lines.encode())
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:  # a full disk: no line of this call may stay half-written
            with contextlib.suppress(OSError):
                handle.truncate(size)
            raise
    if created:
        fsync_path(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to: when the block ends, the file is fsynced and
    renamed over `path` and the folder fsynced, so readers see the old file or the new one,
    never a torn one; if the block fails, the temporary file is removed. The one atomic write."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # no two alike
    with disk_errors(path.parent):
        try:
            yield tmp
            fsync_path(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_path(path.parent)


TEMPORARY_PREFIX = ".tmp-"  # a folder being written by `atomic_folder` (or one a crash cut short)
RETIRED_PREFIX = ".old-"  # a folder `atomic_folder` replaced, removed once the new one is in place


@contextlib.contextmanager
def atomic_folder(final: Path, replace: bool = False) -> Iterator[Path]:
    """A temporary folder beside `final` to write into: when the block ends, every file in it and
    the folder are fsynced, it is renamed to `final` and the parent fsynced, so readers see the
    whole folder or none of it. If the block or the commit fails, the temporary folder is removed
    (a full disk gets its space back) and nothing is left under `final`'s name. An existing
    `final` is an error (`OSError`) unless `replace`: then it is renamed away first and removed
    after. A full or read-only disk raises `StorageFull` / `StorageReadOnly`. The one folder
    commit: shards, index generations, staged tasks and classifiers are all written by it."""
    parent = final.parent
    with disk_errors(parent):
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{final.name}-", dir=parent))
        try:
            yield tmp
            commit_folder(tmp, final, replace)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def commit_folder(folder: Path, final: Path, replace: bool = False) -> None:
    """Make a complete `folder` durable and rename it to `final` on the same file system (see
    `atomic_folder`, which writes one; a folder staged elsewhere, a Ray task's, is committed with
    this alone)."""
    parent = final.parent
    with disk_errors(parent):
        for file in folder.iterdir():
            fsync_path(file)
        fsync_path(folder)
        retired = None
        if replace and final.exists():
            retired = parent / f"{RETIRED_PREFIX}{final.name}-{uuid.uuid4().hex}"
            os.rename(final, retired)
        try:
            os.rename(folder, final)
        except BaseException:
            if retired is not None:
                os.rename(retired, final)  # put the old one back
            raise
        fsync_path(parent)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def remove_temporaries(parent: Path) -> None:
    """Remove the temporary folders a writer that died mid-commit left under `parent` (call it
    while holding the lock that keeps other writers of `parent` out)."""
    for stale in parent.glob(f"{TEMPORARY_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a file `append_durably` wrote, one a line; a line torn by a crash
    mid-append (never acknowledged) is passed over. A missing file has none."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a torn one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def replace_token(path: Path) -> None:
    """Replace a small file with a fresh random token, atomically but not fsynced: a stamp that
    tells readers something changed (after a crash every reader starts afresh, so a lost one
    costs nothing)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with disk_errors(path.parent):
        tmp.write_text(uuid.uuid4().hex)
        os.replace(tmp, path)
