"""A gunicorn worker that reads each request whole before a request thread sees it.

gthread gives a connection to a pool thread once it is readable, and the thread blocks while the
client sends: a few clients sending a byte a second hold every thread. `BufferingWorker` reads each
request in its poller thread (non-blocking) and hands it over whole, within bounds: whole within
`request_timeout` s of the accept or, on a kept-alive connection, of its first byte (else 408);
the head within gunicorn's limits (414, 431); the body within `max_body` (413 from Content-Length,
before the body comes); at most `buffer_cap` bytes held per worker, past which nothing more is read
until memory frees. Chunked bodies are followed through their framing, not refused with 411:
clients streaming an upload of unknown length send them. Answers gunicorn or this worker write
themselves are problem+json. Plain HTTP/1.x only; "gunicorn internals" marks each use of
gthread's private code.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import time
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any, NamedTuple

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http.body import CHUNK_EXT_RE  # gunicorn internals: its chunk-ext rule
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from .errors import PROBLEM_TYPE, problem_json

READ, READ_SIZE = selectors.EVENT_READ, 64 * 1024
LINGER_SECONDS, LINGER_BYTES = 2.0, 2**20  # as gunicorn's close_graceful, without blocking
SWEEP_SECONDS = 0.25  # how often deadlines are checked (the poller wakes at least once a second)
HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
CODINGS = (b"chunked", b"identity", b"gzip", b"deflate", b"compress")
INTERNAL = "an internal error occurred; it has been logged"
# gunicorn's parse errors, most specific first: (class, status, the detail's start).
PARSE_ERRORS: tuple[tuple[Any, int, str], ...] = (
    ((http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName), 500, ""),
    (http_errors.LimitRequestLine, 414, "the request line is too long: "),
    (http_errors.LimitRequestHeaders, 431, "the request's header fields are too large: "),
    (http_errors.ExpectationFailed, 417, ""),
    (http_errors.ParseException, 0, "the request is malformed: "),  # 0: the error's own code
)


class Refused(Exception):
    """A request the worker answers itself, before any thread sees it: (status, detail)."""


class Limits(NamedTuple):
    request_line: int  # bytes
    head: int  # request line and header block
    chunk_line: int
    body: int


def problem_response(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 problem+json answer that closes its connection."""
    body = problem_json(status, detail)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {PROBLEM_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def parse_error_answer(error: BaseException) -> tuple[int, str]:
    """(status, detail) for an error gunicorn raised while reading a request; 500 for the rest."""
    for kind, status, start in PARSE_ERRORS:
        if isinstance(error, kind):
            status = status or getattr(error, "code", 400)  # 403, 500, 501 or 400
            return status, start + str(error) if status < 500 else INTERNAL
    return 500, INTERNAL


def receive(sock: socket.socket, size: int) -> bytes | None:
    """One non-blocking read: None if nothing is there yet, b"" at the end (or a broken link)."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def chunk_size(line: bytes) -> int:
    """The size on a chunk-size line, checked as gunicorn's ChunkedReader checks it."""
    size, semicolon, extension = line.partition(b";")
    if semicolon:
        size = size.rstrip(b" \t")
        if b"\r" in extension or not CHUNK_EXT_RE.fullmatch(b";" + extension):
            raise Refused(400, "a chunk extension is malformed")
    if not HEX.fullmatch(size):
        raise Refused(400, f"a chunk size is malformed: {size[:20]!r}")
    return int(size, 16)


class RequestFrame:
    """Where the request at the start of a growing buffer ends: framing only, no I/O."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.head_end = self.searched = 0  # past the head's blank line; where its search resumes
        self.length: int | None = None  # the body's length; None while unknown or chunked
        self.chunk_at = self.decoded = 0  # chunked: the next chunk-size line; data bytes so far
        self.expects_continue = False

    def end(self, data: bytearray) -> int | None:
        """The request's length once `data` holds all of it, else None; raises Refused for a
        request the worker answers itself (too large, or framing it cannot follow)."""
        if not self.head_end and not self._read_head(data):
            return None
        if self.length is None:
            return self._chunks_end(data)
        return self.head_end + self.length if len(data) >= self.head_end + self.length else None

    def _read_head(self, data: bytearray) -> bool:
        limits = self.limits
        start = 2 if data[:2] == b"\r\n" else 0  # one empty line may come first (RFC 9112 2.2)
        line_end = data.find(b"\r\n", start)
        if (line_end if line_end >= 0 else len(data)) - start > limits.request_line:
            raise Refused(414, f"the request line is over {limits.request_line} bytes")
        end = data.find(b"\r\n\r\n", max(start, self.searched - 3))
        if end < 0 and len(data) > limits.head:
            raise Refused(431, f"the request's head is over {limits.head} bytes")
        self.searched = len(data)
        if end >= 0:
            self.head_end = end + 4
            self._framing(bytes(data[start:end]).split(b"\r\n"))
        return end >= 0

    def _framing(self, lines: list[bytes]) -> None:
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields.setdefault(name.strip().lower(), []).append(value.strip().lower())
        http11 = lines[0].rstrip().endswith(b"HTTP/1.1")
        self.expects_continue = http11 and fields.get(b"expect") == [b"100-continue"]
        lengths = fields.get(b"content-length", [])
        codings = b",".join(fields.get(b"transfer-encoding", []))
        if not codings:
            self.length = self._content_length(lengths) if lengths else 0
            return
        last = codings.split(b",")[-1].strip()
        if last not in CODINGS:
            raise Refused(501, f"transfer coding {last.decode('latin-1')!r} is not supported")
        if last != b"chunked" or lengths or not http11:
            detail = "Transfer-Encoding must end with chunked, without Content-Length, on HTTP/1.1"
            raise Refused(400, f"the body's length cannot be told: {detail}")
        self.chunk_at = self.head_end

    def _content_length(self, lengths: list[bytes]) -> int:
        if len(lengths) > 1 or not lengths[0].isdigit():
            raise Refused(400, f"Content-Length is malformed: {b', '.join(lengths)[:40]!r}")
        length = int(lengths[0]) if len(lengths[0]) <= 18 else self.limits.body + 1
        if length > self.limits.body:
            raise Refused(413, f"the body is {length} bytes; the limit is {self.limits.body}")
        return length

    def _chunks_end(self, data: bytearray) -> int | None:
        limits = self.limits
        if len(data) - self.head_end > 2 * limits.body + limits.chunk_line:
            raise Refused(413, f"the chunked body is over {limits.body} bytes with its framing")
        while True:
            at = self.chunk_at
            eol = data.find(b"\r\n", at, at + limits.chunk_line + 2)
            if eol < 0:
                if len(data) - at > limits.chunk_line:
                    raise Refused(400, f"a chunk-size line is over {limits.chunk_line} bytes")
                return None
            size = chunk_size(bytes(data[at:eol]))
            if size == 0:  # the last chunk, then trailer fields up to an empty line
                end = data.find(b"\r\n\r\n", eol)
                if end < 0 and len(data) - eol > limits.head:
                    raise Refused(431, f"the trailer section is over {limits.head} bytes")
                return None if end < 0 else end + 4
            if self.decoded + size > limits.body:
                raise Refused(413, f"the chunked body is over the limit of {limits.body} bytes")
            after = eol + 2 + size
            if len(data) < after + 2:
                return None
            if data[after : after + 2] != b"\r\n":
                raise Refused(400, "a chunk's data is not followed by CRLF")
            self.decoded += size
            self.chunk_at = after + 2


@dataclass(eq=False, slots=True)
class Incoming:
    """A connection whose next request is being read in the poller thread."""

    conn: TConn
    data: bytearray
    deadline: float
    frame: RequestFrame
    continued: bool = False  # 100 Continue sent


class BufferedSource:
    """What gunicorn's parser reads, as from a socket: the request read whole. A read past it (the
    framing disagreed) gets end-of-stream, not a wait, and the connection then closes."""

    def __init__(self) -> None:
        self.data, self.offset, self.overrun = b"", 0, False

    def recv(self, size: int) -> bytes:  # gunicorn asks for at most 1 MiB: no quadratic copies
        piece = self.data[self.offset : self.offset + size]
        self.offset += len(piece)
        self.overrun |= not piece
        return piece

    def take(self) -> bytes:
        rest, self.data, self.offset = self.data[self.offset :], b"", 0
        return rest


class BufferingWorker(ThreadWorker):
    """gthread, with each request read whole in the poller thread first (see the module's doc)."""

    request_timeout = 10.0
    max_body = 32 * 2**20
    buffer_cap = 128 * 2**20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # gunicorn internals: its bound on a request's head (http/message.py, max_buffer_headers)
        line, size = self.cfg.limit_request_line or 8190, self.cfg.limit_request_field_size or 8190
        head = line + (self.cfg.limit_request_fields or 32768) * (size + 2) + 4
        self.limits = Limits(line, head, size, self.max_body)
        self.cap = max(self.buffer_cap, head + 2 * self.max_body + size)  # one of each fits
        self.incoming: dict[TConn, Incoming] = {}
        self.held: dict[TConn, int] = {}  # bytes of requests handed to threads, until answered
        self.buffered = 0  # bytes of both
        self.paused: list[Incoming] = []  # waiting for room under the cap
        self.lingering: dict[socket.socket, list[float]] = {}  # [deadline, bytes left to drop]
        self.next_sweep = 0.0
        if self.cfg.is_ssl or self.cfg.http2_cleartext != "off" or self.cfg.protocol != "http":
            raise RuntimeError(f"{type(self).__name__} serves plain HTTP/1.x: no TLS, HTTP/2")

    def enqueue_req(self, conn: TConn) -> None:
        """Read the connection's next request first. gunicorn internals: gthread calls this for
        a new connection, a kept-alive one readable again, and one with read-ahead left."""
        leftover = conn.parser.unreader.take_buffered() if conn.parser else b""
        deadline = time.monotonic() + self.request_timeout
        incoming = Incoming(conn, bytearray(leftover), deadline, RequestFrame(self.limits))
        self.incoming[conn] = incoming
        self.buffered += len(leftover)
        conn.sock.setblocking(False)
        if not self._advance(incoming):
            self._listen(incoming)

    def _listen(self, incoming: Incoming) -> None:
        self.poller.register(incoming.conn.sock, READ, partial(self._on_readable, incoming))

    def _unlisten(self, incoming: Incoming) -> None:
        with contextlib.suppress(KeyError):  # paused ones are not registered
            self.poller.unregister(incoming.conn.sock)

    def _on_readable(self, incoming: Incoming, _sock: socket.socket) -> None:
        room = self.cap - self.buffered
        if room <= 0:  # over the cap: read nothing more until memory frees
            self._unlisten(incoming)
            self.paused.append(incoming)
            return
        data = receive(incoming.conn.sock, min(READ_SIZE, room))
        if data == b"":  # the client left before its request was whole
            self._end(incoming)
            util.close(incoming.conn.sock)
        elif data:
            incoming.data += data
            self.buffered += len(data)
            self._advance(incoming)

    def _advance(self, incoming: Incoming) -> bool:
        """Hand the request over, or refuse it, once that can be told; True if done."""
        try:
            end = incoming.frame.end(incoming.data)
        except Refused as refusal:
            self._refuse(incoming, *refusal.args)
            return True
        if end is not None:
            self._hand_over(incoming)
        elif incoming.frame.expects_continue and not incoming.continued:
            # gunicorn sends another once the body is here: HTTP allows two interim answers
            incoming.continued = True
            with contextlib.suppress(OSError):  # never blocks: a short answer fits the buffer
                incoming.conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        return end is not None

    def _hand_over(self, incoming: Incoming) -> None:
        conn = incoming.conn
        self._unlisten(incoming)
        del self.incoming[conn]
        self.held[conn] = len(incoming.data)
        if conn.parser is None:  # gunicorn internals: TConn.init() keeps a parser it finds
            conn.parser = RequestParser(self.cfg, BufferedSource(), conn.client)
        conn.parser.unreader.sock.data = bytes(incoming.data)  # read from its start
        conn.data_ready = True  # gunicorn internals: handle() then skips its wait for data
        super().enqueue_req(conn)

    def _end(self, incoming: Incoming) -> None:
        """Forget a connection that is about to close."""
        self._unlisten(incoming)
        self.incoming.pop(incoming.conn, None)
        self.nr_conns -= 1  # gunicorn internals: the worker's count of open connections
        self._free(len(incoming.data))

    def _free(self, size: int) -> None:
        self.buffered -= size
        if self.paused and self.buffered < self.cap:
            paused, self.paused = self.paused, []
            for incoming in paused:
                if self.incoming.get(incoming.conn) is incoming:
                    self._listen(incoming)

    def _refuse(self, incoming: Incoming, status: int, detail: str) -> None:
        self.log.info("refused ip=%s: %d %s", incoming.conn.client[0], status, detail)
        self._end(incoming)
        with contextlib.suppress(OSError):  # never blocks: a short answer fits the buffer
            incoming.conn.sock.send(problem_response(status, detail))
        self._linger(incoming.conn.sock)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """gunicorn internals: run on the poller thread when handle() returns (True: keep
        alive). Closing connections linger here without blocking the poller (see `_linger`)."""
        self._free(self.held.pop(conn, 0))
        keep = not fs.cancelled() and fs.exception() is None and fs.result()
        unreader = conn.parser.unreader
        if keep and not unreader.sock.overrun:  # gunicorn serves read-ahead left in its buffer
            unreader.unread(unreader.take_buffered() + unreader.sock.take())
            super().finish_request(conn, fs)
            return
        self.nr_conns -= 1
        self._linger(conn.sock)

    def _linger(self, sock: socket.socket) -> None:
        """Close once the client has read the answer: FIN, then drop what it sends until it closes
        (at most LINGER_*); gunicorn's close_graceful does it, blocking the poller thread."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, READ, self._drain)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.lingering[sock] = [time.monotonic() + LINGER_SECONDS, LINGER_BYTES]

    def _drain(self, sock: socket.socket, expired: bool = False) -> None:
        data = b"" if expired else receive(sock, READ_SIZE)
        linger = self.lingering[sock]
        linger[1] -= len(data or b"")
        if data == b"" or linger[1] <= 0:
            del self.lingering[sock]
            self.poller.unregister(sock)
            util.close(sock)

    def murder_pending(self) -> None:
        """Also time out requests still arriving, and lingering closes. gunicorn internals:
        run() calls this after every poll, and while the worker stops."""
        super().murder_pending()
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_SECONDS
        late = f"the request did not arrive whole within {self.request_timeout:g} s"
        for incoming in list(self.incoming.values()):
            if not (self.alive or incoming.data):  # stopping: a request may come, but not for long
                incoming.deadline = min(incoming.deadline, now + STOP_KEEPALIVE_LINGER)
            if incoming.deadline <= now and incoming.data:
                self._refuse(incoming, 408, late)
            elif incoming.deadline <= now:  # no request begun: close, as gthread an idle connection
                self._end(incoming)
                util.close(incoming.conn.sock)
        for sock in [sock for sock, (deadline, _) in self.lingering.items() if deadline <= now]:
            self._drain(sock, expired=True)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer what gunicorn answers itself (a request it cannot parse, an app that failed
        before answering) with problem+json, not HTML. gunicorn internals: called by handle()."""
        status, detail = parse_error_answer(exc)
        log = self.log.exception if status >= 500 else self.log.warning
        log("could not serve a request from ip=%s: %s", (addr or ("",))[0], exc)
        with contextlib.suppress(Exception):  # the client may be gone
            util.write_nonblock(client, problem_response(status, detail))


def configured_worker(
    request_timeout: float, max_body: int, buffer_cap: int | None = None
) -> type[BufferingWorker]:
    """A BufferingWorker class with these bounds; `buffer_cap` defaults to 4 x `max_body`."""
    cap = buffer_cap or 4 * max_body
    bounds = {"request_timeout": request_timeout, "max_body": max_body, "buffer_cap": cap}
    return type("LookalikeWorker", (BufferingWorker,), bounds)
