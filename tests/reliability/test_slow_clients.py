"""Slow clients against a real `lookalike serve` (2 workers x 4 threads): senders of a byte a
second hold no request thread, are cut off at the request deadline, and every answer gunicorn
writes itself is problem+json. `bench/slow_clients_bench.py` runs the attack longer.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lookalike.server.worker import Limits, Refused, RequestFrame
from lookalike.store.collection import Collection

from .harness import PROBLEM, Client, Server, early_answer_request, noise_png

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

READ, WRITE = "slow-reader", "slow-writer"
READER = {"Authorization": f"Bearer {READ}"}
MAX_UPLOAD = 200_000
DEADLINE = 3.0  # the server's request_timeout here
SLOW_BODY = (
    b"POST /v1/collections/c/search/images HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
)
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_spec) -> Iterator[Server]:
    path = Collection.create(tmp_path_factory.mktemp("slow") / "c", tiny_spec).path
    rng = np.random.default_rng(0)
    with Collection.open(path).writer() as writer:
        vectors = {
            layer: rng.standard_normal((20, width)).astype(np.float32)
            for layer, width in tiny_spec.dims.items()
        }
        writer.add([{"path": f"item-{n}.png"} for n in range(20)], vectors)
    env = {
        "LOOKALIKE_READ_KEYS": READ,
        "LOOKALIKE_WRITE_KEYS": WRITE,
        "LOOKALIKE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "LOOKALIKE_REQUEST_TIMEOUT": str(DEADLINE),
    }
    with Server({"c": path}, env, workers=2, threads=4) as running:
        running.wait_ready()
        yield running
        assert "Traceback" not in running.output(), running.output()[-3000:]


class SlowSenders:
    """`count` connections from one thread, each sending `head` at once, then `trickle` a byte a
    second; one the server answers or closes (cut off) is opened again."""

    def __init__(self, base: str, head: bytes, trickle: bytes, count: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.address, self.head, self.trickle, self.count = (host, int(port)), head, trickle, count
        self.stop, self.cut_off = threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SlowSenders:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.sendall(self.head)
        return sock

    def _run(self) -> None:
        sockets = {self._connect(): 0 for _ in range(self.count)}
        while not self.stop.wait(1.0):
            answered = set(select.select(list(sockets), [], [], 0)[0])
            for sock, sent in list(sockets.items()):
                try:
                    if sock in answered:  # cut off: an answer (408, or gthread's 401), or closed
                        raise ConnectionAbortedError
                    sock.send(self.trickle[sent : sent + 1])
                    sockets[sock] = sent + 1
                except OSError:
                    self.cut_off += 1
                    sock.close()
                    del sockets[sock]
                    sockets[self._connect()] = 0
        for sock in sockets:
            sock.close()


def poll_latencies(base: str, seconds: float) -> tuple[list[float], list[str]]:
    """/healthz on a new connection and a search on a kept-alive one, in turn, for `seconds`:
    each answer's seconds, and what went wrong (a 5xx, a failure, a timeout)."""
    client, latencies, errors = Client(base, READER, timeout=5), [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for request in ("healthz", "search"):
            started = time.perf_counter()
            try:
                if request == "healthz":
                    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
                        status = answer.status
                else:
                    status = client.json(
                        "POST", "/v1/collections/c/search", {"id": 3, "k": 2}
                    ).status
            except OSError as error:
                status = repr(error)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(f"{request}: {status}")
        time.sleep(0.05)
    client.close()
    return latencies, errors


@pytest.mark.parametrize(
    ("head", "trickle"), [(SLOW_BODY, b"x" * 100_000), (b"", SLOW_HEAD)], ids=["body", "head"]
)
def test_slow_senders_hold_no_thread(server: Server, head: bytes, trickle: bytes) -> None:
    """24 connections sending a byte a second (three per request thread), no credentials: health
    checks and searches are answered within a second all the while (gthread: many seconds)."""
    with SlowSenders(server.base, head, trickle, 24) as senders:
        time.sleep(1.5)  # every sender connected and started
        latencies, errors = poll_latencies(server.base, 2 * DEADLINE + 1)
    assert not errors, errors[:10]
    assert max(latencies) < 1.0, f"slowest {max(latencies):.2f} s of {len(latencies)}"
    assert senders.cut_off >= 24  # as many cut off as there are senders: the deadline holds


def read_answer(sock: socket.socket, wait: float) -> tuple[int, str, bytes] | None:
    """The answer on `sock` within `wait` seconds: (status, content type, body); None if the
    server closed the connection without one."""
    if not select.select([sock], [], [], wait)[0]:
        raise AssertionError(f"no answer and no close within {wait} s")
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.getheader("Content-Type", ""), response.read()
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return None


def assert_problem(status: int, content_type: str, body: bytes, expected: int) -> dict:
    assert status == expected, body
    assert content_type == PROBLEM
    problem = json.loads(body)
    assert problem["status"] == expected and problem["title"] and problem["detail"]
    assert problem["type"] == "https://lookalike.dev/problems/" + problem["title"].lower().replace(
        " ", "-"
    )
    return problem


def test_a_sender_past_the_deadline_is_cut_off_and_the_threads_are_free(server: Server) -> None:
    host, port = server.base.removeprefix("http://").split(":")
    started = time.monotonic()
    socks = [socket.create_connection((host, int(port))) for _ in range(16)]
    for sock in socks:
        sock.sendall(SLOW_BODY + b"-")
    answers = [read_answer(sock, DEADLINE + 3) for sock in socks]
    assert time.monotonic() - started < DEADLINE + 3
    for answer in answers:
        if answer is not None:  # a 408 problem, or at least a closed connection
            assert_problem(*answer, 408)
    assert any(answers)
    for sock in socks:
        sock.close()
    with ThreadPoolExecutor(8) as pool:  # right after: all 8 threads answer at once
        burst = list(pool.map(lambda _: poll_once(server.base), range(8)))
    assert all(seconds < 1.0 for seconds in burst), burst


def poll_once(base: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
        assert answer.status == 200
    return time.perf_counter() - started


def raw_exchange(base: str, data: bytes, wait: float = 10.0) -> tuple[int, str, bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        answer = read_answer(sock, wait)
    assert answer is not None, "the server closed the connection without an answer"
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 120 + b"\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /" + b"a" * 9000, 414),  # no end of line yet: refused before the head ends
        (b"NOT A REQUEST LINE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: nope\r\n\r\n", 501),
    ],
    ids=[
        "field-size",
        "field-count",
        "uri",
        "uri-unended",
        "line",
        "header",
        "length",
        "chunk",
        "coding",
    ],
)
def test_protocol_errors_are_problems(server: Server, request_bytes: bytes, status: int) -> None:
    assert_problem(*raw_exchange(server.base, request_bytes), status)


def test_a_body_over_the_limit_is_refused_from_its_header(server: Server) -> None:
    answer = early_answer_request(
        server.base, "POST", "/v1/collections/c/items", b"x" * (MAX_UPLOAD + 1), READER
    )
    problem = assert_problem(answer.status, answer.content_type, answer.body, 413)
    assert str(MAX_UPLOAD) in problem["detail"]
    assert answer.seconds < 2  # answered from the head: the body was never sent


def test_uploads_keep_alive_pipelining_chunked_and_continue_still_work(server: Server) -> None:
    client = Client(server.base, READER)
    answer = client.upload("/v1/collections/c/search/images", [("a.png", noise_png(1))], k="3")
    assert answer.status == 200 and len(answer.json()["results"][0]["hits"]) == 3
    connection = client._connection
    for _ in range(3):  # one connection, kept alive
        assert client.json("POST", "/v1/collections/c/search", {"id": 1, "k": 2}).status == 200
    assert client._connection is connection and client.resent == 0
    client.close()

    search = b'{"id": 2, "k": 2}'
    key = b"Authorization: Bearer " + READ.encode() + b"\r\n"
    pipelined = (
        b"POST /v1/collections/c/search HTTP/1.1\r\nHost: x\r\n"
        + key
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(search), search)
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(pipelined)
        received = b"".join(iter(lambda: sock.recv(65536), b""))
    assert received.count(b"HTTP/1.1 200 OK") == 2, received[:500]

    chunked = http.client.HTTPConnection(host, int(port), timeout=10)
    pieces = (search[:5], search[5:9], search[9:])
    headers = {**READER, "Content-Type": "application/json"}
    chunked.request("POST", "/v1/collections/c/search", iter(pieces), headers, encode_chunked=True)
    response = chunked.getresponse()
    assert response.status == 200 and json.loads(response.read())["results"][0]["hits"]
    chunk_socket = chunked.sock
    chunked.request("GET", "/healthz")  # the same connection, kept alive after a chunked body
    assert chunked.getresponse().status == 200 and chunked.sock is chunk_socket
    chunked.close()

    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/collections/c/search HTTP/1.1\r\nHost: x\r\n"
            + key
            + b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(search)
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")  # asked for its body
        sock.sendall(search)
        received = b"".join(iter(lambda: sock.recv(65536), b""))
    assert b"HTTP/1.1 200 OK" in received


LIMITS = Limits(request_line=100, head=400, chunk_line=20, body=50)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nGET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nTrailer: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_the_frame_ends_exactly_at_the_last_byte(request_bytes: bytes) -> None:
    """Fed a byte at a time (and then with the next request behind it), the frame finds the
    request's end at its last byte and not before."""
    frame, data = RequestFrame(LIMITS), bytearray()
    for byte in request_bytes[:-1]:
        data.append(byte)
        assert frame.end(data) is None
    data += request_bytes[-1:] + b"GET / HTTP/1.1\r\n\r\n"
    assert frame.end(data) == len(request_bytes)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 51\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n33\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 30, 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /" + b"a" * 120, 414),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100, 431),
    ],
)
def test_the_frame_refuses_what_it_cannot_hold_or_follow(request_bytes: bytes, status: int) -> None:
    with pytest.raises(Refused) as refused:
        RequestFrame(LIMITS).end(bytearray(request_bytes))
    assert refused.value.args[0] == status


def test_the_worker_class_is_what_serve_runs() -> None:
    from lookalike.server.serve import BUFFERED_UPLOADS
    from lookalike.server.worker import BufferingWorker, configured_worker

    worker = configured_worker(2.5, 1000, BUFFERED_UPLOADS * 1000)
    assert issubclass(worker, BufferingWorker)
    assert (worker.request_timeout, worker.max_body, worker.buffer_cap) == (2.5, 1000, 4000)
