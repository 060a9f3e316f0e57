"""Job records on disk: a job's record, lock and cancel request in its collection's ``jobs/``
folder, whether a process still answers for it (an flock held), and the pruning of finished ones.
`jobs` runs them (see its docstring for the guarantees)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from lookalike.durable import disk_errors, write_atomic

JOBS = "jobs"
LIVE = ("queued", "running")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class JobBounds:
    """How many live (queued or running) jobs a collection and a client may have; how many
    finished records a collection keeps (the newest), and for how many seconds."""

    per_collection: int
    per_client: int
    history: int
    history_seconds: float


@dataclass
class Job:
    """A job's record; `request` holds what resuming it needs, `owner` whose bound it counts
    against, `runner` the runner that queued it (none of them shown to clients)."""

    kind: str
    collection: str
    request: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"  # queued, running, succeeded, failed, cancelled, interrupted
    done: int = 0
    total: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    created: str = field(default_factory=now)
    started: str | None = None
    finished: str | None = None
    owner: str | None = None
    runner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        for hidden in ("request", "owner", "runner"):
            del shown[hidden]
        return shown

    def finished_at(self) -> float:
        """When it ended (else was created), in seconds since the epoch; 0 if unreadable."""
        try:
            return dt.datetime.fromisoformat(self.finished or self.created).timestamp()
        except (TypeError, ValueError):
            return 0.0


def lock_is_held(path: Path) -> bool:
    """Whether an open file (of any process, this one's included) holds an flock on `path`; a
    missing file is held by nobody. Opens it without creating it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_if_free(path: Path) -> None:
    """Remove a lock file nobody holds (taking it first, so no holder loses it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


class JobFiles:
    """Where one job lives: its record, lock and cancel request in the collection's jobs folder."""

    def __init__(self, collection_dir: Path, job_id: str) -> None:
        self.folder = collection_dir / JOBS
        self.record = self.folder / f"{job_id}.json"
        self.lock = self.folder / f"{job_id}.lock"
        self.cancel = self.folder / f"{job_id}.cancel"

    def save(self, job: Job) -> None:
        with disk_errors(self.folder):
            self.folder.mkdir(exist_ok=True)
        write_atomic(self.record, json.dumps(asdict(job)).encode())

    def load(self) -> Job:
        job = Job(**json.loads(self.record.read_text()))
        job.cancel_requested = job.cancel_requested or self.cancel.exists()
        return job

    def try_lock(self) -> IO | None:
        """The job's lock if no process holds it (an open file: close it to release), else None.
        An existing lock is opened for reading (flock needs no more), so a read-only collection
        still tells a live job from a dead one; a new one on a read-only disk is `StorageReadOnly`."""
        with disk_errors(self.folder):
            self.folder.mkdir(exist_ok=True)
            mode = "r" if self.lock.exists() else "a+"
            handle = open(self.lock, mode)  # noqa: SIM115 - held while the job runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def runner_lock(self, runner: str) -> Path:
        return self.folder / f"runner-{runner}.lock"

    def is_live(self, job: Job) -> bool:
        """Whether a process answers for a job its record says is live: the runner that queued
        it holds its lock (a queued job), or a process holds the job's (a running one)."""
        if job.state == "queued" and job.runner:
            return lock_is_held(self.runner_lock(job.runner))
        return lock_is_held(self.lock)

    def discard(self) -> None:
        """Remove a finished job's files, checked under its lock (a job resumed meanwhile stays)."""
        handle = self.try_lock()
        if handle is None:
            return
        with handle:
            try:
                job = self.load()
            except (OSError, ValueError, TypeError):  # gone, or damaged: leave it be
                return
            if job.state in LIVE:
                return
            for path in (self.record, self.cancel, self.lock):
                path.unlink(missing_ok=True)


def records(collection_dir: Path) -> Iterator[tuple[Job, JobFiles]]:
    """Every readable job record of a collection, with its files (damaged ones are skipped)."""
    for path in sorted((collection_dir / JOBS).glob("*.json")):
        files = JobFiles(collection_dir, path.stem)
        try:
            job = files.load()
        except (FileNotFoundError, ValueError, TypeError):  # gone meanwhile, or damaged
            continue
        yield job, files


class FinishedRecords:
    """A collection's job records, the finished ones read once: a finished record changes only
    when it is replaced (a resume writes a new file), so an unchanged file (same inode, time and
    size) is not read again. What a submission's scan needs, with hundreds of finished records."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, int, int], tuple[Job, JobFiles]]] = {}

    def scan(self, collection_dir: Path) -> list[tuple[Job, JobFiles]]:
        found, known = [], {}
        with contextlib.suppress(FileNotFoundError), os.scandir(collection_dir / JOBS) as entries:
            for entry in entries:
                if not entry.name.endswith(".json"):
                    continue
                try:
                    stat = entry.stat()
                    key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                    cached = self._known.get(entry.name)
                    if cached is not None and cached[0] == key:
                        pair = cached[1]
                    else:
                        files = JobFiles(collection_dir, entry.name.removesuffix(".json"))
                        pair = (files.load(), files)
                except (FileNotFoundError, ValueError, TypeError):  # gone meanwhile, or damaged
                    continue
                if pair[0].state not in LIVE:
                    known[entry.name] = (key, pair)
                found.append(pair)
        self._known = known
        return found


def prune(found: list[tuple[Job, JobFiles]], bounds: JobBounds) -> None:
    """Remove a collection's finished records older than the history's age or past its count
    (the newest are kept), and the locks of runners that are gone; live records stay."""
    finished = sorted(
        (pair for pair in found if pair[0].state not in LIVE),
        key=lambda pair: pair[0].finished_at(),
        reverse=True,
    )
    oldest = time.time() - bounds.history_seconds
    for rank, (job, files) in enumerate(finished):
        if rank >= bounds.history or job.finished_at() < oldest:
            files.discard()
    if found:
        for lock in found[0][1].folder.glob("runner-*.lock"):
            remove_if_free(lock)
