"""A real Milvus-protocol server for the tests: Milvus Lite's gRPC server (the `milvus-lite`
wheel) on a free loopback port, in its own data folder. Slow (a Python engine): keep data small."""

from __future__ import annotations

import contextlib
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_names = itertools.count()


@contextlib.contextmanager
def milvus_lite_server(data_dir: Path, port: int, timeout: float = 90.0) -> Iterator[str]:
    """Start `python -m milvus_lite server`; yields its ``milvus://127.0.0.1:PORT`` base URI."""
    server = start_milvus_lite(data_dir, port, timeout)
    try:
        yield f"milvus://127.0.0.1:{port}"
    finally:
        stop_milvus_lite(server)


def start_milvus_lite(data_dir: Path, port: int, timeout: float = 90.0) -> subprocess.Popen:
    """`python -m milvus_lite server` on `port` over `data_dir`, once it accepts connections (its
    output appended to ``milvus-PORT.log`` beside `data_dir`)."""
    with (data_dir.parent / f"milvus-{port}.log").open("ab") as log:
        command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir)]
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if server.poll() is not None or time.monotonic() > deadline:
            stop_milvus_lite(server)
            raise AssertionError(f"milvus-lite server did not start: {log.name}")
        time.sleep(0.2)
    return server


def stop_milvus_lite(server: subprocess.Popen, kill: bool = False) -> None:
    """SIGTERM (SIGKILL with `kill`: a crash), then reap."""
    server.kill() if kill else server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def fresh_name(prefix: str = "t") -> str:
    """A Milvus collection name no other test in this session uses."""
    return f"{prefix}_{next(_names)}"
