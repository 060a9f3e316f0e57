"""Background jobs: a bounded queue (per collection and per API key: 429 with Retry-After past
it), finished records pruned by age and count, no file held open by a queued job, a job whose
runner died read as interrupted, and no 500 when no file can be opened."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike.server.app import create_app
from lookalike.server.errors import ApiError
from lookalike.server.jobs import Job, JobBounds, JobFiles, JobRunner, RunningJob
from lookalike.server.settings import Settings

WIDE = JobBounds(per_collection=1000, per_client=1000, history=1000, history_seconds=86_400)
WRITER, OTHER = "w1", "w2"
AUDIT = "/v1/collections/c/audit"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: the blocking jobs return."""
    event = threading.Event()
    yield event
    event.set()


def blocking(release: threading.Event):
    def work(running: RunningJob) -> dict:
        release.wait(60)
        return {}

    return work


def done(running: RunningJob) -> dict:
    return {"ok": True}


def runner_over(tmp_path: Path, bounds: JobBounds = WIDE) -> JobRunner:
    (tmp_path / "c").mkdir(exist_ok=True)
    return JobRunner({"c": tmp_path / "c"}, bounds)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_full_collection_queue_is_a_429_with_retry_after(tmp_path: Path, release) -> None:
    bounds = JobBounds(per_collection=3, per_client=1000, history=1000, history_seconds=86_400)
    runner = runner_over(tmp_path, bounds)
    jobs = [runner.submit("audit", "c", {}, blocking(release), owner=f"k{n}") for n in range(3)]
    with pytest.raises(ApiError) as refused:
        runner.submit("audit", "c", {}, done, owner="k9")
    assert refused.value.status == 429 and "max_queued_jobs" in refused.value.detail
    assert int(refused.value.headers["Retry-After"]) > 0
    runner.cancel(jobs[2].id)  # a queued job, cancelled: it ends when its turn comes
    release.set()
    assert runner.wait(jobs[2].id, 30).state == "cancelled"
    runner.wait(jobs[1].id, 30)
    assert runner.submit("audit", "c", {}, done, owner="k9").state == "queued"  # room again


def test_a_key_with_too_many_jobs_gets_429_and_another_key_does_not(synthetic, release) -> None:
    settings = Settings(
        collections={"c": synthetic.path}, write_keys=frozenset({WRITER, OTHER}),
        max_queued_jobs_per_key=2, max_queued_jobs=10,
    )  # fmt: skip
    app = create_app(settings)
    client = app.test_client()
    runner: JobRunner = app.extensions["lookalike-jobs"]
    runner.submit("audit", "c", {}, blocking(release))  # holds the runner: the rest stay queued

    def post(key: str):
        return client.post(AUDIT, json={}, headers={"Authorization": f"Bearer {key}"})

    first, second, third = post(WRITER), post(WRITER), post(WRITER)
    assert [first.status_code, second.status_code] == [202, 202]
    assert third.status_code == 429 and third.content_type == "application/problem+json"
    assert "max_queued_jobs_per_key" in third.json["detail"] and third.headers["Retry-After"]
    other = post(OTHER)
    assert other.status_code == 202, other.json
    for answer in (first, second, other):
        cancelled = client.delete(
            answer.headers["Location"], headers={"Authorization": f"Bearer {WRITER}"}
        )
        assert cancelled.status_code == 202 and cancelled.json["cancel_requested"]
    assert post(WRITER).status_code == 202  # cancelled jobs end and leave room
    release.set()


def test_queued_jobs_hold_no_file_open(tmp_path: Path, release) -> None:
    runner = runner_over(tmp_path)
    runner.submit("audit", "c", {}, blocking(release))
    before = open_fds()
    queued = [runner.submit("audit", "c", {}, done) for _ in range(50)]
    assert open_fds() <= before + 1  # the runner's own lock in the collection, at most
    other = runner_over(tmp_path)  # another process's view of the same folder
    assert {other.get(job.id).state for job in queued} == {"queued"}
    release.set()
    assert runner.wait(queued[-1].id, 30).state == "succeeded"
    assert open_fds() <= before + 1


def old_record(files: JobFiles, state: str, days_ago: float) -> Job:
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)).isoformat()
    job = Job("audit", "c", state=state, created=when, finished=None if state == "queued" else when)
    job.id = files.record.stem
    files.save(job)
    return job


def records(tmp_path: Path) -> set[str]:
    return {path.stem for path in (tmp_path / "c" / "jobs").glob("*.json")}


def test_finished_records_are_pruned_by_age_never_live_ones(tmp_path: Path, release) -> None:
    bounds = JobBounds(per_collection=100, per_client=100, history=100, history_seconds=3 * 86_400)
    runner = runner_over(tmp_path, bounds)
    running = runner.submit("audit", "c", {}, blocking(release))
    folder = tmp_path / "c"
    old = {
        state: old_record(JobFiles(folder, f"{n:032x}"), state, days_ago=10)
        for n, state in enumerate(("succeeded", "failed", "cancelled", "queued"))
    }
    recent = old_record(JobFiles(folder, f"{9:032x}"), "succeeded", days_ago=1)
    new = runner.submit("audit", "c", {}, done)
    assert records(tmp_path) == {running.id, new.id, recent.id, old["queued"].id}
    assert runner.get(old["queued"].id).state == "interrupted"  # resumable: kept
    assert not list(folder.glob(f"jobs/{old['failed'].id}.*"))  # its lock and cancel files too
    release.set()


def test_finished_records_are_pruned_to_the_newest_count(tmp_path: Path, release) -> None:
    bounds = JobBounds(per_collection=100, per_client=100, history=3, history_seconds=86_400)
    runner = runner_over(tmp_path, bounds)
    finished = [runner.wait(runner.submit("audit", "c", {}, done).id, 30) for _ in range(6)]
    assert all(job.state == "succeeded" for job in finished)
    queued = runner.submit("audit", "c", {}, blocking(release))
    kept = records(tmp_path)
    assert queued.id in kept and len(kept) == 4
    assert {job.id for job in finished[-3:]} <= kept  # the newest three
    release.set()


CHILD = """
import sys, threading, time
from pathlib import Path
from lookalike.server.jobs import JobBounds, JobRunner
runner = JobRunner({"c": Path(sys.argv[1])}, JobBounds(10, 10, 10, 86400.0))
never = threading.Event()
ids = [runner.submit("audit", "c", {}, lambda running: never.wait()).id for _ in range(3)]
while runner.get(ids[0]).state != "running":
    time.sleep(0.01)
print(" ".join(ids), flush=True)
never.wait()
"""


def test_queued_jobs_of_a_killed_process_read_interrupted_and_resume(tmp_path: Path) -> None:
    """A queued job holds no lock of its own: its runner's lock says whether it still lives."""
    (tmp_path / "c").mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "c")], stdout=subprocess.PIPE, text=True
    )
    try:
        running, *queued = child.stdout.readline().split()
        runner = runner_over(tmp_path)
        states = [runner.get(id).state for id in (running, *queued)]
        assert states == ["running", "queued", "queued"]
        with pytest.raises(ApiError) as taken:
            runner.resume(queued[0], done)
        assert taken.value.status == 409  # queued in a live process: not resumable here
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert {runner.get(id).state for id in (running, *queued)} == {"interrupted"}
    assert runner.submit("audit", "c", {}, done)  # interrupted jobs take no room
    runner.resume(queued[0], done)
    assert runner.wait(queued[0], 30).state == "succeeded"
    assert runner.cancel(queued[1]).state == "cancelled"


@contextlib.contextmanager
def no_file_left() -> Iterator[None]:
    """This process at its open-file limit (as under a flood with `ulimit -n`), then back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))), hard))
    filled = []
    try:
        with contextlib.suppress(OSError):
            while True:
                filled.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in filled:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_no_file_descriptor_left_is_a_503_and_the_runner_lives_on(synthetic) -> None:
    app = create_app(Settings(collections={"c": synthetic.path}))
    client = app.test_client()
    runner: JobRunner = app.extensions["lookalike-jobs"]
    with no_file_left():
        answer = client.post(AUDIT, json={})
    assert answer.status_code == 503 and answer.content_type == "application/problem+json"
    assert "Too many open files" in answer.json["detail"] and answer.headers["Retry-After"]
    with no_file_left():
        try:
            runner.submit("audit", "c", {}, done)
        except ApiError as error:
            refused = error
    assert refused.status == 503 and "Too many open files" in refused.detail
    assert refused.headers["Retry-After"]
    assert not list((synthetic.path / "jobs").glob("*.json"))  # nothing half-queued
    job = runner.submit("audit", "c", {}, done)
    assert runner.wait(job.id, 30).state == "succeeded"
    assert json.loads(client.get(f"/v1/jobs/{job.id}").data)["state"] == "succeeded"


def test_a_read_only_collection_beside_a_writable_one_refuses_only_its_own_jobs(
    tmp_path: Path,
) -> None:
    """Admission locks every served collection's queue (the per-key bound counts across them):
    one served from a read-only mount must not stop jobs on the others."""
    from conftest import read_only_view

    from lookalike.errors import StorageReadOnly

    (tmp_path / "source" / "jobs").mkdir(parents=True)
    (tmp_path / "w").mkdir()
    with read_only_view(tmp_path / "source", tmp_path / "ro") as view:
        runner = JobRunner({"ro": view, "w": tmp_path / "w"}, WIDE)
        try:
            job = runner.submit("audit", "w", {}, done)
            assert runner.wait(job.id, 30).state == "succeeded"
            with pytest.raises(StorageReadOnly, match="refuses writes"):
                runner.submit("audit", "ro", {}, done)
        finally:
            runner.shutdown()
    assert not any((tmp_path / "source" / "jobs").iterdir())
