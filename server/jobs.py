"""Background jobs (bulk embedding, training): they run in the server, whatever the client does."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, status_of

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Job:
    kind: str
    collection: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"  # queued, running, succeeded, failed
    done: int = 0
    total: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created: str = field(default_factory=_now)
    finished: str | None = None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class JobRunner:
    """Runs jobs one at a time on a background thread and keeps their state for polling."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lookalike-job")
        self._jobs: dict[str, Job] = {}
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, collection: str, work: Callable[[Job], dict[str, Any]]) -> Job:
        job = Job(kind, collection)
        with self._lock:
            self._jobs[job.id] = job
            self._futures[job.id] = self._executor.submit(self._run, job, work)
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (or `timeout` seconds passed); the job either way."""
        job = self.get(job_id)
        with contextlib.suppress(TimeoutError):
            self._futures[job_id].result(timeout)
        return job

    def _run(self, job: Job, work: Callable[[Job], dict[str, Any]]) -> None:
        job.state = "running"
        try:
            job.result = work(job)
            job.state = "succeeded"
        except Exception as error:  # a job's failure is reported on the job, never lost
            status = error.status if isinstance(error, ApiError) else status_of(error)
            if status is None:
                log.exception("job %s (%s) failed", job.id, job.kind)
                job.error = {
                    "status": 500,
                    "detail": "an internal error occurred; it has been logged",
                }
            else:
                job.error = {"status": status, "detail": str(error)}
            job.state = "failed"
        finally:
            job.finished = _now()

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise ApiError(404, f"no job {job_id!r}")
            return self._jobs[job_id]

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.created, reverse=True)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
