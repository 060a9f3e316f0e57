"""Background jobs (bulk embedding, training, audits): durable, shared by every worker,
cancellable, bounded.

A job lives in its collection's ``jobs/`` folder: ``<id>.json`` (its state, written atomically),
``<id>.lock`` (an flock held by the process running it, from its start to its end) and
``<id>.cancel`` (a cancel request, which the running job sees between batches). A queued job holds
no file open: its record names the runner that queued it, and a runner holds one flock of its own
in each collection's folder (``runner-<id>.lock``) for its whole life. So any worker process
answers for any job, a restart forgets none, and a job whose lock nobody holds (the runner's while
its record says queued, the job's while it says running) died with its process: it reads
`interrupted` and can be resumed. A collection, and a client (an API key), may have a bounded
number of live jobs (429 past it); finished records are pruned by age and count.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from lookalike.durable import acquire_lock, disk_errors
from lookalike.errors import Cancelled, CollectionError, StorageReadOnly

from .errors import ApiError, status_of
from .job_records import (
    JOBS,
    LIVE,
    FinishedRecords,
    Job,
    JobBounds,
    JobFiles,
    now,
    prune,
    records,
)

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RESUMABLE = ("interrupted", "failed", "cancelled")
PROGRESS_EVERY_SECONDS = 1.0  # progress is written to disk at most this often
QUEUE_LOCK = "queue.lock"  # held while a job is admitted: the bounds hold across processes
QUEUE_LOCK_WAIT = 10.0  # seconds a submission waits for other processes' admissions
RETRY_FULL_SECONDS = 30  # Retry-After of a 429 (a full queue): jobs take a while
RETRY_UNAVAILABLE_SECONDS = 5  # Retry-After of a 503 (no file descriptor left, a stopping worker)


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


@contextlib.contextmanager
def unavailable_on_os_error(what: str) -> Iterator[None]:
    """A file the server could not open or lock (no descriptor left, say) as a 503 to retry."""
    try:
        yield
    except (OSError, CollectionError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        log.warning("could not %s: %s", what, error)
        raise ApiError(
            503,
            f"the server cannot {what} now ({reason}); retry in a few seconds",
            headers={"Retry-After": str(RETRY_UNAVAILABLE_SECONDS)},
        ) from None


class JobRunner:
    """Runs this process's jobs one at a time on a background thread; answers for every job of
    the served collections, whichever process ran it."""

    def __init__(self, collections: Mapping[str, Path], bounds: JobBounds) -> None:
        self.collections = dict(collections)
        self.bounds = bounds
        self.id = uuid.uuid4().hex
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lookalike-job")
        self._running: dict[str, threading.Event] = {}  # job id -> set once it has ended
        self._lock = threading.Lock()
        self._runner_locks: dict[Path, IO] = {}  # collection dir -> this runner's lock, held
        self._scans = {path: FinishedRecords() for path in self.collections.values()}

    def submit(
        self,
        kind: str,
        collection: str,
        request: dict[str, Any],
        work: Callable[[RunningJob], dict],
        owner: str | None = None,
    ) -> Job:
        """Queue a new job (its record durable before this returns); 429 when its collection or
        its `owner` has too many live jobs, 503 when no file can be opened."""
        job = Job(kind, collection, request, owner=owner)
        files = self._files(job)
        with unavailable_on_os_error("queue a job"):
            self._admit(job, files)
        return self._start(job, files, work, forget=True)

    def resume(self, job_id: str, work: Callable[[RunningJob], dict], owner: str | None = None):
        """Run an interrupted, failed or cancelled job again (resumable work skips what is done),
        within the bounds as a new job."""
        with unavailable_on_os_error("resume a job"):
            job, files, handle = self._take(job_id)
            with handle:
                if job.state not in RESUMABLE:
                    raise ApiError(
                        409, f"job {job_id} is {job.state}; only {', '.join(RESUMABLE)} jobs resume"
                    )
                files.cancel.unlink(missing_ok=True)
                job.state, job.error, job.result, job.finished = "queued", None, None, None
                job.cancel_requested, job.owner = False, owner
                self._admit(job, files)
        return self._start(job, files, work, forget=False)

    def cancel(self, job_id: str) -> Job:
        """Ask a live job to stop (it ends `cancelled` after its current batch); an interrupted
        one is marked cancelled at once; a finished one is a 409."""
        with unavailable_on_os_error("cancel a job"):
            job, files = self._find(job_id)
            if job.state in LIVE and files.is_live(job):
                with disk_errors(files.folder):
                    files.cancel.touch()
                job.cancel_requested = True
                return job
            job, files, handle = self._take(job_id)
            with handle:
                if job.state not in ("queued", "interrupted"):
                    raise ApiError(409, f"job {job_id} has already ended ({job.state})")
                job.state, job.finished = "cancelled", now()
                files.save(job)
                return job

    def get(self, job_id: str) -> Job:
        with unavailable_on_os_error("read a job"):
            job, files = self._find(job_id)
            return self._as_seen(job, files)

    def all(self) -> list[Job]:
        with unavailable_on_os_error("read the jobs"):
            jobs = [
                self._as_seen(job, files)
                for path in self.collections.values()
                for job, files in records(path)
            ]
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

    def _admit(self, job: Job, files: JobFiles) -> None:
        """Save `job` queued under this runner if its collection and its owner have room (else
        429), under every served collection's queue lock (in path order: no deadlock), so the
        bounds hold across processes; then prune the collection's finished records."""
        with self._lock, contextlib.ExitStack() as held:
            for path in sorted(self.collections.values()):
                try:
                    with disk_errors(path / JOBS):
                        (path / JOBS).mkdir(exist_ok=True)
                    lock = acquire_lock(path / JOBS / QUEUE_LOCK, QUEUE_LOCK_WAIT, what="queued to")
                except StorageReadOnly:
                    if path == self.collections[job.collection]:
                        raise
                    continue  # a read-only collection queues no job: none of its to count
                held.enter_context(lock)
            seen = {name: self._scans[path].scan(path) for name, path in self.collections.items()}
            self._check_room(job, seen)
            self._hold_runner_lock(files)
            job.runner = self.id
            files.save(job)
            prune(seen[job.collection], self.bounds)

    def _check_room(self, job: Job, seen: Mapping[str, list[tuple[Job, JobFiles]]]) -> None:
        """429 unless `job` fits its collection's and its owner's bounds; a queued job asked to
        cancel takes no room (it ends when its turn comes)."""
        live = [
            other
            for found in seen.values()
            for other, other_files in found
            if other.state in LIVE
            and other.id != job.id
            and not (other.state == "queued" and other.cancel_requested)
            and other_files.is_live(other)
        ]
        in_collection = sum(other.collection == job.collection for other in live)
        if in_collection >= self.bounds.per_collection:
            _full(
                f"collection {job.collection!r} has {in_collection} jobs queued or running, "
                f"its limit (max_queued_jobs)"
            )
        if job.owner is None:
            return
        of_owner = sum(other.owner == job.owner for other in live)
        if of_owner >= self.bounds.per_client:
            _full(
                f"this client has {of_owner} jobs queued or running, its limit "
                "(max_queued_jobs_per_key)"
            )

    def _hold_runner_lock(self, files: JobFiles) -> None:
        """Hold this runner's lock in the job's collection (once, for the runner's life): its
        queued jobs live while it is held. Locked under a temporary name, then renamed into
        place, so it is never seen free."""
        if files.folder in self._runner_locks:
            return
        final = files.runner_lock(self.id)
        temporary = final.with_name(f".{final.name}.tmp")
        handle = open(temporary, "a+")  # noqa: SIM115 - held for the runner's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(temporary, final)
        except BaseException:
            handle.close()
            raise
        self._runner_locks[files.folder] = handle

    def _start(
        self, job: Job, files: JobFiles, work: Callable[[RunningJob], dict], forget: bool
    ) -> Job:
        """Hand a saved, queued job to the executor; a worker that is stopping answers 503 (a new
        job's record is removed: it was never acknowledged)."""
        ended = threading.Event()
        with self._lock:
            self._running[job.id] = ended
        try:
            self._executor.submit(self._run, job, files, work, ended)
        except RuntimeError as error:  # the executor or the interpreter is shutting down
            with self._lock:
                self._running.pop(job.id, None)
            if forget:
                files.record.unlink(missing_ok=True)
            raise ApiError(
                503,
                f"this worker is stopping ({error}); retry the request",
                headers={"Retry-After": str(RETRY_UNAVAILABLE_SECONDS)},
            ) from None
        return job

    def _run(
        self,
        job: Job,
        files: JobFiles,
        work: Callable[[RunningJob], dict],
        ended: threading.Event,
    ) -> None:
        try:
            handle = acquire_lock(files.lock, math.inf)  # a cancel may hold it for a moment
        except Exception as error:  # no file descriptor left, say: the job fails, not its slot
            log.exception("job %s (%s) could not start", job.id, job.kind)
            job.state, job.finished = "failed", now()
            job.error = {"status": 503, "detail": f"the job could not start ({error}); resume it"}
            with contextlib.suppress(Exception):
                files.save(job)
            ended.set()
            return
        try:
            if self._still_mine(job, files):
                self._run_locked(job, files, work)
        finally:
            handle.close()
            ended.set()

    def _still_mine(self, job: Job, files: JobFiles) -> bool:
        """Whether the record still says this runner's job is queued (nobody took it over)."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            found = files.load()
            return found.state == "queued" and found.runner == self.id
        return False

    def _run_locked(self, job: Job, files: JobFiles, work: Callable[[RunningJob], dict]) -> None:
        try:
            if files.cancel.exists():
                raise Cancelled("cancelled before it started")
            job.state, job.started = "running", now()
            files.save(job)
            job.result = work(RunningJob(job, files))
            job.state = "succeeded"
        except Cancelled as error:
            job.state, job.error = "cancelled", {"status": 409, "detail": str(error)}
        except Exception as error:  # a job's failure is reported on the job, never lost
            job.state, job.error = "failed", _error_of(job, error)
        finally:
            job.finished = now()
            job.cancel_requested = files.cancel.exists()
            files.save(job)

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
    def _as_seen(job: Job, files: JobFiles) -> Job:
        """The job as clients see it: a live one nobody answers for died with its process."""
        if job.state not in LIVE or files.is_live(job):
            return job
        with contextlib.suppress(FileNotFoundError):
            job = files.load()  # it may have ended between the read and the look at its lock
        if job.state in LIVE:
            job.state = "interrupted"  # its process died (a crash, a restart) before it ended
        return job

    def _take(self, job_id: str) -> tuple[Job, JobFiles, IO]:
        """The job, read under its lock, and the lock (close it to release); 409 if a process
        runs it or holds it queued. A live state nobody answers for is `interrupted`."""
        job, files = self._find(job_id)
        handle = files.try_lock()
        if handle is None:
            raise ApiError(409, f"job {job_id} is running")
        try:
            job = files.load()
            if job.state == "queued" and job.runner and files.is_live(job):
                raise ApiError(409, f"job {job_id} is queued; DELETE /v1/jobs/{job_id} cancels it")
        except BaseException:
            handle.close()
            raise
        if job.state in LIVE:
            job.state = "interrupted"
        return job, files, handle


def _full(detail: str) -> None:
    raise ApiError(
        429,
        f"{detail}: retry later, or cancel one (DELETE /v1/jobs/ID)",
        headers={"Retry-After": str(RETRY_FULL_SECONDS)},
    )


def _error_of(job: Job, error: Exception) -> dict[str, Any]:
    status = error.status if isinstance(error, ApiError) else status_of(error)
    if status is None:
        log.exception("job %s (%s) failed", job.id, job.kind)
        return {"status": 500, "detail": "an internal error occurred; it has been logged"}
    return {"status": status, "detail": str(error)}
