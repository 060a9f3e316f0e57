"""A flood of job submissions against a real `lookalike serve` under a lowered open-file limit:
each queued job held an open lock file and nothing bounded the queue, so the worker ran out of
file descriptors (500s, then a dead worker). Now: 202 or 429, a bounded `jobs/` folder, few fds."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .harness import Client, Server

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

FLOOD, THREADS, OPEN_FILES = 400, 8, 256
HISTORY, PER_KEY = 20, 8  # finished records kept; live jobs a key may have
WRITE, READ = {"Authorization": "Bearer w1"}, {"Authorization": "Bearer r1"}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def flood(base: str, statuses: Counter, errors: list[str]) -> None:
    """FLOOD audit submissions from THREADS keep-alive clients; statuses and errors counted."""
    todo = iter(range(FLOOD))
    lock = threading.Lock()

    def submit() -> None:
        client = Client(base, WRITE, timeout=30)
        while True:
            with lock:
                if next(todo, None) is None:
                    break
            try:
                answer = client.json("POST", "/v1/collections/c/audit", {})
            except OSError as error:  # the worker dropped the connection
                with lock:
                    errors.append(repr(error))
                continue
            with lock:
                statuses[answer.status] += 1
        client.close()

    threads = [threading.Thread(target=submit) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


@pytest.mark.slow  # about 30 s of it starting the server and the model
def test_a_flood_of_jobs_is_refused_with_429_not_a_dead_worker(digit_collection: Path) -> None:
    env = {
        "LOOKALIKE_READ_KEYS": "r1",
        "LOOKALIKE_WRITE_KEYS": "w1",
        "LOOKALIKE_JOB_HISTORY": str(HISTORY),
        "LOOKALIKE_MAX_QUEUED_JOBS_PER_KEY": str(PER_KEY),
    }
    server = Server({"c": digit_collection}, env=env, open_files=OPEN_FILES).start()
    statuses: Counter = Counter()
    errors: list[str] = []
    try:
        server.wait_ready()
        [worker] = server.worker_pids()
        client = Client(server.base, READ)
        assert client.request("GET", "/v1/jobs").status == 200
        baseline = open_fds(worker)
        peak_fds, peak_records = baseline, 0
        flooding = threading.Thread(target=flood, args=(server.base, statuses, errors))
        flooding.start()
        while flooding.is_alive():  # sample while jobs are queued
            peak_fds = max(peak_fds, open_fds(worker))
            peak_records = max(peak_records, len(list((digit_collection / "jobs").glob("*.json"))))
            time.sleep(0.02)
        flooding.join()
        assert client.request("GET", "/healthz").status == 200
        found = client.json("POST", "/v1/collections/c/search", {"id": 0, "k": 3})
        assert found.status == 200, found.body
        assert server.worker_pids() == [worker]  # the same worker: it never died
    finally:
        server.kill()
    output = server.output()
    assert not errors, errors[:3]
    assert set(statuses) <= {202, 429}, (statuses, output[-3000:])
    assert statuses[202] + statuses[429] == FLOOD and statuses[429] > 0
    assert "Too many open files" not in output and "WORKER TIMEOUT" not in output
    assert peak_fds <= baseline + 2 * THREADS + 8, (baseline, peak_fds)
    records = len(list((digit_collection / "jobs").glob("*.json")))
    assert max(peak_records, records) <= HISTORY + PER_KEY + THREADS, (peak_records, records)
