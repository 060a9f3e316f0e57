"""Slow clients: senders of a byte a second against a real `lookalike serve`, while a client searches.

    python bench/slow_clients_bench.py            # 64 senders for 30 s
    python bench/slow_clients_bench.py --quick    # 64 senders for 10 s

One collection of the tiny real model (resnet18, random weights, 64 px) with synthetic vectors,
served by `lookalike serve` (2 workers x 8 threads, request_timeout 10 s: serve's defaults) with
API keys. Two probes run throughout: /healthz on a new connection each time, and an authenticated
search by id on a kept-alive connection. First with no attackers (the baseline, same run), then
under attack: 64 connections from one thread, no credentials, each sending a POST head with
`Content-Length: 100000` at once and then its body a byte a second, opened again whenever the
server cuts one off. Printed: /healthz and search p50/p99 both ways and their ratio, 5xx and failed
probes, the senders cut off (408), and how long after the senders stop a burst of one request per
server thread is all answered within 1 s (the threads are free). Targets: p99 < 1 s under attack,
no 5xx, threads free within the request timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test harness (a real server, a keep-alive client)

from conftest import TINY  # noqa: E402
from reliability.harness import Client, Server, percentile_ms  # noqa: E402

from lookalike.embedder import get_backbone  # noqa: E402
from lookalike.server.settings import Settings  # noqa: E402
from lookalike.store.collection import Collection  # noqa: E402

WORKDIR = ROOT / "bench-data" / "slow-clients"
KEY = "bench-reader"
HEAD = (
    b"POST /v1/collections/c/search/images HTTP/1.1\r\nHost: bench\r\n"
    b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
)


def make_collection(folder: Path, items: int) -> Path:
    """A collection of the tiny model's spec holding `items` synthetic vectors."""
    with get_backbone(**TINY) as backbone:
        collection = Collection.create(folder, backbone.spec)
    rng = np.random.default_rng(0)
    with collection.writer() as writer:
        vectors = {
            layer: rng.standard_normal((items, width)).astype(np.float32)
            for layer, width in collection.spec.dims.items()
        }
        writer.add([{"path": f"synthetic/{n}.png"} for n in range(items)], vectors)
    return collection.path


class Senders:
    """`count` slow senders on one thread; each one the server answers or closes is counted (408s
    apart) and opened again. Stopping closes them all at once."""

    def __init__(self, base: str, count: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.address, self.count = (host, int(port)), count
        self.stop, self.cut_off, self.timeouts = threading.Event(), 0, 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.sendall(HEAD)
        return sock

    def _cut_off(self, sock: socket.socket) -> None:
        self.cut_off += 1
        with contextlib.suppress(OSError):
            self.timeouts += sock.recv(100).startswith(b"HTTP/1.1 408")
        sock.close()

    def _run(self) -> None:
        sockets = [self._connect() for _ in range(self.count)]
        while not self.stop.wait(1.0):
            answered = set(select.select(sockets, [], [], 0)[0])
            for index, sock in enumerate(sockets):
                try:
                    if sock in answered:
                        raise ConnectionAbortedError
                    sock.send(b"x")
                except OSError:
                    self._cut_off(sock)
                    sockets[index] = self._connect()
        for sock in sockets:
            sock.close()


class Probes:
    """/healthz on new connections and searches on a kept-alive one, on two threads, until
    stopped: the seconds of each answer, the 5xx and the failures (timeouts, refusals)."""

    def __init__(self, base: str) -> None:
        self.base, self.stop = base, threading.Event()
        self.seconds: dict[str, list[float]] = {"healthz": [], "search": []}
        self.five_xx, self.failed = 0, 0
        self.threads = [threading.Thread(target=self._loop, args=(k,)) for k in self.seconds]

    def __enter__(self) -> Probes:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _loop(self, kind: str) -> None:
        client = Client(self.base, {"Authorization": f"Bearer {KEY}"}, timeout=10)
        while not self.stop.wait(0.02):
            started = time.perf_counter()
            try:
                if kind == "healthz":
                    with urllib.request.urlopen(f"{self.base}/healthz", timeout=10) as answer:
                        status = answer.status
                else:
                    payload = {"id": int(time.monotonic_ns() % 1000), "k": 10}
                    status = client.json("POST", "/v1/collections/c/search", payload).status
            except OSError:
                self.failed += 1
                continue
            self.seconds[kind].append(time.perf_counter() - started)
            self.five_xx += status >= 500
        client.close()


def burst_seconds(base: str, size: int) -> float:
    """The slowest of `size` /healthz requests sent at once, each on a new connection."""

    def one(_: int) -> float:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=30) as answer:
                answer.read()
        except OSError:
            return float("inf")
        return time.perf_counter() - started

    with ThreadPoolExecutor(size) as pool:
        return max(pool.map(one, range(size)))


def free_after(base: str, size: int, limit: float) -> float:
    """Seconds until a burst of `size` requests is all answered within 1 s (inf past `limit`)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if burst_seconds(base, size) < 1.0:
            return time.monotonic() - started
    return float("inf")


def row(label: str, probes: Probes) -> list[float]:
    figures = [percentile_ms(probes.seconds[k], q) for k in probes.seconds for q in (50, 99)]
    counts = f"{sum(map(len, probes.seconds.values())):>9} {probes.five_xx:>5} {probes.failed:>7}"
    print(f"{label:<26}" + "".join(f"{v:>12.1f}" for v in figures) + f" {counts}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s of attack")
    parser.add_argument("--seconds", type=float, help="attack length (default 30; quick 10)")
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="per worker (serve's default)")
    parser.add_argument("--items", type=int, default=5000)
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    timeout = Settings().request_timeout
    folder = WORKDIR / "c"
    if not Collection.exists(folder):
        make_collection(folder, args.items)
    env = {"LOOKALIKE_READ_KEYS": KEY, "LOOKALIKE_WRITE_KEYS": KEY + "-w"}
    with Server({"c": folder}, env, workers=args.workers, threads=args.threads) as server:
        server.wait_ready()
        burst_seconds(server.base, args.workers * args.threads)  # warm every thread
        print(f"server: {args.workers} workers x {args.threads} threads, request_timeout "
              f"{timeout:g} s; {args.senders} senders, {seconds:g} s each phase")  # fmt: skip
        print(f"{'':<26}{'health p50':>12}{'p99 ms':>12}{'search p50':>12}{'p99 ms':>12}"
              f" {'answers':>9} {'5xx':>5} {'failed':>7}")  # fmt: skip
        with Probes(server.base) as quiet:
            time.sleep(seconds)
        base = row("no attackers (baseline)", quiet)
        senders = Senders(server.base, args.senders)
        senders.thread.start()
        time.sleep(1.0)  # all connected and sending
        with Probes(server.base) as attacked:
            time.sleep(seconds)
        ours = row(f"{args.senders} slow senders", attacked)
        senders.stop.set()
        senders.thread.join()
        free = free_after(server.base, args.workers * args.threads, 3 * timeout)
    print(
        f"{'under attack / baseline':<26}"
        + "".join(f"{o / b:>12.2f}" for o, b in zip(ours, base, strict=True))
    )
    print(f"senders cut off by the server: {senders.cut_off} ({senders.timeouts} with 408)")
    print(f"threads free {free:.2f} s after the senders stopped "
          f"(a burst of {args.workers * args.threads} requests all answered within 1 s)")  # fmt: skip
    met = max(ours[1], ours[3]) < 1000 and attacked.five_xx == 0 and free <= timeout
    print(f"targets (p99 < 1 s under attack, no 5xx, threads free within {timeout:g} s): "
          f"{'met' if met else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
