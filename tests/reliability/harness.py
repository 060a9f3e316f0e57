"""A real `lookalike serve` in its own process group, a keep-alive HTTP client, small test images."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from conftest import free_port
from PIL import Image

from lookalike.server.serve import READY_LINE

PROBLEM = "application/problem+json"
CLOSED_BY_PEER = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
LEAKS = ("Traceback", 'File "')  # what a leaked Python traceback looks like


class Server:
    """`lookalike serve` started in a new session: its process group holds the gunicorn master and
    every worker, so `kill()` (SIGKILL to the group) is a crash of the whole server."""

    def __init__(
        self,
        collections: dict[str, Path],
        env: dict[str, str] | None = None,
        workers: int = 1,
        threads: int = 8,
        open_files: int | None = None,
    ) -> None:
        self.collections, self.env, self.workers, self.threads = collections, env, workers, threads
        self.open_files = open_files  # a lowered RLIMIT_NOFILE for the server (as `ulimit -n`)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self.started = 0.0

    def start(self) -> Server:
        command = [sys.executable, "-m", "lookalike", "serve", "--port", str(self.port)]
        command += ["--workers", str(self.workers), "--threads", str(self.threads)]
        command += [f"{name}={path}" for name, path in self.collections.items()]
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **(self.env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: master and workers die together
            preexec_fn=None if self.open_files is None else self._limit_open_files,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _limit_open_files(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Block until every worker has loaded its model and index; seconds since `start`."""
        with self._changed:
            ready = self._changed.wait_for(
                lambda: self._closed or self.output().count(READY_LINE) >= self.workers, timeout
            )
            if self._closed or not ready:
                raise AssertionError(f"the server did not get ready:\n{self.output()[-4000:]}")
        with urllib.request.urlopen(f"{self.base}/readyz", timeout=30) as answer:
            assert answer.status == 200
        return time.monotonic() - self.started

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL to the whole process group (master and workers at once), then reap."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        self._wait_closed()

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM to the master (what a supervisor sends); its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._wait_closed()
        return code

    def _wait_closed(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._closed, 10)

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return children(self.process.pid)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def children(pid: int) -> list[int]:
    """Ids of the processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc/PID/status (VmRSS: now, VmHWM: its peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP/1.1 connection, reopened after any error; raises OSError (or
    http.client's errors) when the server is unreachable or drops the connection.

    As browsers and urllib3 do, a request that finds its kept-alive connection already closed by
    the server (idle past gunicorn's keep-alive timeout) is sent once more on a new connection:
    the server never read it. Every request here may be repeated (uploads are stored by content).
    `resent` counts them; an error that `request` raises came from a new connection.
    """

    def __init__(self, base: str, headers: dict[str, str] | None = None, timeout: float = 60):
        self.host, port = base.removeprefix("http://").split(":")
        self.port, self.headers, self.timeout = int(port), dict(headers or {}), timeout
        self._connection: http.client.HTTPConnection | None = None
        self.resent = 0

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        started = time.perf_counter()
        reused = self._connection is not None
        try:
            response, data = self._send(method, path, body, headers)
        except CLOSED_BY_PEER:
            if not reused:
                raise
            self.resent += 1
            response, data = self._send(method, path, body, headers)
        seconds = time.perf_counter() - started
        return Answer(response.status, response.getheader("Content-Type", ""), data, seconds)

    def _send(self, method, path, body, headers) -> tuple[http.client.HTTPResponse, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
        try:
            self._connection.request(method, path, body, {**self.headers, **(headers or {})})
            response = self._connection.getresponse()
            data = response.read()
        except Exception:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response, data

    def json(self, method: str, path: str, payload: Any) -> Answer:
        body = json.dumps(payload).encode()
        return self.request(method, path, body, {"Content-Type": "application/json"})

    def upload(self, path: str, files: Sequence[tuple[str, bytes]], **fields: str) -> Answer:
        body, content_type = multipart([("image", name, data) for name, data in files], fields)
        return self.request("POST", path, body, {"Content-Type": content_type})

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def early_answer_request(
    base: str, method: str, path: str, body: bytes, headers: dict[str, str], wait: float = 10.0
) -> Answer:
    """A request whose head goes first: a server that refuses it from its Content-Length (413)
    answers before the body is sent, so the answer is read without racing the server's close."""
    host, port = base.removeprefix("http://").split(":")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode("latin-1"))
        if not select.select([sock], [], [], wait)[0]:  # no early answer: send the body
            sock.sendall(body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        data = response.read()
    seconds = time.perf_counter() - started
    return Answer(response.status, response.getheader("Content-Type", ""), data, seconds)


def multipart(
    files: Sequence[tuple[str, str, bytes]],
    fields: dict[str, str] | None = None,
    part_type: str = "application/octet-stream",
) -> tuple[bytes, str]:
    """A multipart/form-data body of (field, filename, bytes) files and plain fields."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for field, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: {part_type}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def noise_png(seed: int, size: int = 24) -> bytes:
    """A small PNG of seeded noise: distinct bytes (and vector) for every seed."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def leaks_traceback(body: bytes) -> bool:
    text = body.decode(errors="replace")
    return any(marker in text for marker in LEAKS)


@contextlib.contextmanager
def background(target, count: int) -> Iterator[threading.Event]:
    """`count` threads running `target(number, stop)` until the yielded event is set."""
    stop = threading.Event()
    threads = [threading.Thread(target=target, args=(n, stop), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q)) if seconds else float("nan")
