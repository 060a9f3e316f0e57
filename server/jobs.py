"""Background jobs (bulk embedding, training): durable, shared by every worker, cancellable.

A job lives in its collection's ``jobs/`` folder: ``<id>.json`` (its state, written atomically),
``<id>.lock`` (an flock held by the process running it, from submission to its end) and
``<id>.cancel`` (a cancel request, which the running job sees between batches). So any worker
process answers for any job, a restart forgets none, and a job whose lock nobody holds while its
record says queued or running died with its process: it reads `interrupted` and can be resumed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from lookalike.durable import disk_errors, write_atomic
from lookalike.errors import Cancelled

from .errors import ApiError, status_of

log = logging.getLogger(__name__)

JOBS = "jobs"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
LIVE = ("queued", "running")
RESUMABLE = ("interrupted", "failed", "cancelled")
PROGRESS_EVERY_SECONDS = 1.0  # progress is written to disk at most this often


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """A job's record; `request` holds what resuming it needs (not shown to clients)."""

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
    created: str = field(default_factory=_now)
    started: str | None = None
    finished: str | None = None

    def to_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        del shown["request"]
        return shown


class JobFiles:
    """Where one job lives: its record, lock and cancel request in the collection's jobs folder."""

    def __init__(self, collection_dir: Path, job_id: str) -> None:
        folder = collection_dir / JOBS
        self.record = folder / f"{job_id}.json"
        self.lock = folder / f"{job_id}.lock"
        self.cancel = folder / f"{job_id}.cancel"

    def save(self, job: Job) -> None:
        with disk_errors(self.record.parent):
            self.record.parent.mkdir(exist_ok=True)
        write_atomic(self.record, json.dumps(asdict(job)).encode())

    def load(self) -> Job:
        job = Job(**json.loads(self.record.read_text()))
        job.cancel_requested = job.cancel_requested or self.cancel.exists()
        return job

    def try_lock(self) -> IO | None:
        """The job's lock if no process holds it (an open file: close it to release), else None.
        An existing lock is opened for reading (flock needs no more), so a read-only collection
        still tells a live job from a dead one; a new one on a read-only disk is `StorageReadOnly`."""
        with disk_errors(self.lock.parent):
            self.lock.parent.mkdir(exist_ok=True)
            mode = "r" if self.lock.exists() else "a+"  # lock files are never removed
            handle = open(self.lock, mode)  # noqa: SIM115 - held while the job is live
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle


class RunningJob:
    """What a job's work sees: progress to report and whether it was asked to stop."""

    def __init__(self, job: Job, files: JobFiles) -> None:
        self.job, self.files = job, files
        self._saved = 0.0

    def progress(self, done: int, total: int) -> None:
        self.job.done, self.job.total = done, total
        if time.monotonic() - self._saved >= PROGRESS_EVERY_SECONDS:
            self.files.save(self.job)
            self._saved = time.monotonic()

    def cancel_requested(self) -> bool:
        return self.files.cancel.exists()


class JobRunner:
    """Runs this process's jobs one at a time on a background thread; answers for every job of
    the served collections, whichever process ran it."""

    def __init__(self, collections: Mapping[str, Path]) -> None:
        self.collections = dict(collections)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lookalike-job")
        self._running: dict[str, threading.Event] = {}  # job id -> set once it has ended
        self._lock = threading.Lock()

    def submit(
        self,
        kind: str,
        collection: str,
        request: dict[str, Any],
        work: Callable[[RunningJob], dict],
    ) -> Job:
        """Queue a new job (its record durable before this returns)."""
        job = Job(kind, collection, request)
        files = self._files(job)
        handle = files.try_lock()
        assert handle is not None  # a new id: nobody else holds it
        files.save(job)
        return self._start(job, files, handle, work)

    def resume(self, job_id: str, work: Callable[[RunningJob], dict]) -> Job:
        """Run an interrupted, failed or cancelled job again (resumable work skips what is done)."""
        job, files, handle = self._take(job_id)
        try:
            if job.state not in RESUMABLE:
                raise ApiError(
                    409, f"job {job_id} is {job.state}; only {', '.join(RESUMABLE)} jobs resume"
                )
            files.cancel.unlink(missing_ok=True)
            job.state, job.error, job.result, job.finished = "queued", None, None, None
            job.cancel_requested = False
            files.save(job)
        except BaseException:
            handle.close()
            raise
        return self._start(job, files, handle, work)  # the run releases the lock when it ends

    def cancel(self, job_id: str) -> Job:
        """Ask a live job to stop (it ends `cancelled` after its current batch); an interrupted
        one is marked cancelled at once; a finished one is a 409."""
        job, files = self._find(job_id)
        if job.state in LIVE and not self._is_orphan(files):
            with disk_errors(files.cancel.parent):
                files.cancel.touch()
            job.cancel_requested = True
            return job
        job, files, handle = self._take(job_id)
        with handle:
            if job.state not in ("queued", "interrupted"):
                raise ApiError(409, f"job {job_id} has already ended ({job.state})")
            job.state, job.finished = "cancelled", _now()
            files.save(job)
            return job

    def get(self, job_id: str) -> Job:
        job, files = self._find(job_id)
        if job.state in LIVE and self._is_orphan(files):
            job.state = "interrupted"  # its process died (a crash, a restart) before it ended
        return job

    def all(self) -> list[Job]:
        jobs = []
        for path in self.collections.values():
            for record in sorted((path / JOBS).glob("*.json")):
                with contextlib.suppress(ApiError, ValueError, TypeError):  # a damaged record
                    jobs.append(self.get(record.stem))
        return sorted(jobs, key=lambda job: job.created, reverse=True)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until a job this process runs has ended (or `timeout` passed); the job."""
        with self._lock:
            ended = self._running.get(job_id)
        if ended is not None:
            ended.wait(timeout)
        return self.get(job_id)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

    def _start(
        self, job: Job, files: JobFiles, handle: IO, work: Callable[[RunningJob], dict]
    ) -> Job:
        ended = threading.Event()
        with self._lock:
            self._running[job.id] = ended
        self._executor.submit(self._run, job, files, handle, work, ended)
        return job

    def _run(
        self,
        job: Job,
        files: JobFiles,
        handle: IO,
        work: Callable[[RunningJob], dict],
        ended: threading.Event,
    ) -> None:
        try:
            if files.cancel.exists():
                raise Cancelled("cancelled before it started")
            job.state, job.started = "running", _now()
            files.save(job)
            job.result = work(RunningJob(job, files))
            job.state = "succeeded"
        except Cancelled as error:
            job.state, job.error = "cancelled", {"status": 409, "detail": str(error)}
        except Exception as error:  # a job's failure is reported on the job, never lost
            job.state, job.error = "failed", _error_of(job, error)
        finally:
            job.finished = _now()
            job.cancel_requested = files.cancel.exists()
            try:
                files.save(job)
            finally:
                handle.close()
                ended.set()

    def _files(self, job: Job) -> JobFiles:
        return JobFiles(self.collections[job.collection], job.id)

    def _find(self, job_id: str) -> tuple[Job, JobFiles]:
        if JOB_ID.match(job_id):
            for path in self.collections.values():
                files = JobFiles(path, job_id)
                with contextlib.suppress(FileNotFoundError):
                    return files.load(), files
        raise ApiError(404, f"no job {job_id!r}")

    @staticmethod
    def _is_orphan(files: JobFiles) -> bool:
        handle = files.try_lock()
        if handle is None:
            return False
        handle.close()
        return True

    def _take(self, job_id: str) -> tuple[Job, JobFiles, IO]:
        """The job, read under its lock, and the lock (close it to release); 409 if a process
        runs the job. A live state under a free lock is `interrupted`."""
        job, files = self._find(job_id)
        handle = files.try_lock()
        if handle is None:
            raise ApiError(409, f"job {job_id} is running")
        try:
            job = files.load()
        except BaseException:
            handle.close()
            raise
        if job.state in LIVE:
            job.state = "interrupted"
        return job, files, handle


def _error_of(job: Job, error: Exception) -> dict[str, Any]:
    status = error.status if isinstance(error, ApiError) else status_of(error)
    if status is None:
        log.exception("job %s (%s) failed", job.id, job.kind)
        return {"status": 500, "detail": "an internal error occurred; it has been logged"}
    return {"status": status, "detail": str(error)}
