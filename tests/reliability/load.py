"""Mixed load: concurrent clients search (by vector, id and image), upload and delete; every
acknowledged write is read back at once over a new connection (either worker may answer it)."""

from __future__ import annotations

import collections
import hashlib
import http.client
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.store.collection import Collection

from .harness import Answer, Client, Server, background, memory_kib, noise_png, percentile_ms

COLLECTION = "/v1/collections/c"
MIX = (("vector", 0.40), ("id", 0.20), ("image", 0.15), ("upload", 0.15), ("delete", 0.10))


@dataclass
class LoadLedger:
    """Answers and latencies by kind, and the writes the server acknowledged."""

    ids: list[int]  # ids known to exist (searched by id)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    seconds: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    acknowledged: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    not_read_back: list[str] = field(default_factory=list)  # acknowledged, yet not seen at once
    unexpected: list[str] = field(default_factory=list)  # 5xx, and 4xx no request should get
    cut_off: collections.Counter = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, answer: Answer) -> None:
        with self.lock:
            self.statuses[(kind, answer.status)] += 1
            self.seconds[kind].append(answer.seconds)
            if answer.status >= 500 or answer.status not in EXPECTED[kind]:
                self.unexpected.append(f"{kind}: {answer.status} {answer.body[:300]!r}")


EXPECTED = {
    "vector": {200},
    "id": {200, 404},  # 404: an item deleted by another client meanwhile
    "image": {200},
    "upload": {201},
    "delete": {204, 404},
}


@dataclass
class LoadReport:
    seconds: float
    clients: int
    workers: int
    served: int
    by_kind: dict[str, tuple[int, float, float]]  # kind -> (count, p50 ms, p99 ms)
    five_xx: int
    unexpected: list[str]
    cut_off: dict[str, int]
    acknowledged_uploads: int
    acknowledged_deletes: int
    not_read_back: list[str]
    lost: int
    rss_warm_kib: dict[int, int]
    rss_end_kib: dict[int, int]
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    def rss_growth_kib(self) -> int:
        return max(
            (self.rss_end_kib[pid] - self.rss_warm_kib[pid] for pid in self.rss_end_kib),
            default=0,
        )

    def lines(self) -> list[str]:
        kinds = ", ".join(
            f"{kind} {count} (p50 {p50:.0f} ms, p99 {p99:.0f} ms)"
            for kind, (count, p50, p99) in self.by_kind.items()
        )
        warm = ", ".join(f"{kib / 1024:.0f}" for kib in self.rss_warm_kib.values())
        end = ", ".join(f"{kib / 1024:.0f}" for kib in self.rss_end_kib.values())
        return [
            f"load: {self.clients} clients for {self.seconds:.0f} s on {self.workers} workers: "
            f"{self.served} requests served, 5xx: {self.five_xx}, p50 {self.p50_ms:.0f} ms, "
            f"p99 {self.p99_ms:.0f} ms",
            f"  by kind: {kinds}",
            f"  acknowledged uploads {self.acknowledged_uploads}, deletes "
            f"{self.acknowledged_deletes}; not read back at once: {len(self.not_read_back)}; "
            f"lost: {self.lost}",
            f"  worker RSS after warm-up: {warm} MiB; at the end: {end} MiB "
            f"(largest growth {self.rss_growth_kib() / 1024:.0f} MiB)",
        ]


def client_loop(
    base: str,
    ledger: LoadLedger,
    width: int,
    key: dict[str, str],
    rng: random.Random,
    stop: threading.Event,
) -> None:
    client, kinds, weights = Client(base, key), [k for k, _ in MIX], [w for _, w in MIX]
    mine: list[int] = []  # this client's live uploads, the ones it may delete
    while not stop.is_set():
        kind = rng.choices(kinds, weights)[0]
        try:
            _one(client, base, key, kind, ledger, width, mine, rng)
        except (OSError, http.client.HTTPException) as error:
            with ledger.lock:
                ledger.cut_off[f"new connection: {type(error).__name__}"] += 1
            time.sleep(0.05)
    client.close()
    if client.resent:
        with ledger.lock:
            ledger.cut_off["kept-alive connection closed before a request was read: resent"] += (
                client.resent
            )


def _one(client, base, key, kind, ledger, width, mine, rng) -> None:
    if kind == "vector":
        vector = np.random.default_rng(rng.getrandbits(32)).standard_normal(width)
        ledger.record(
            kind, client.json("POST", f"{COLLECTION}/search", {"vector": vector.tolist()})
        )
    elif kind == "id":
        item_id = rng.choice(ledger.ids)
        ledger.record(kind, client.json("POST", f"{COLLECTION}/search", {"id": item_id, "k": 5}))
    elif kind == "image":
        image = noise_png(rng.getrandbits(32), size=48)
        ledger.record(kind, client.upload(f"{COLLECTION}/search/images", [("q.png", image)], k="5"))
    elif kind == "upload":
        seed = rng.getrandbits(48)
        answer = client.upload(f"{COLLECTION}/items", [(f"{seed}.png", noise_png(seed))])
        ledger.record(kind, answer)
        if answer.status == 201:
            item_id = answer.json()["items"][0]["id"]
            with ledger.lock:
                ledger.acknowledged.add(item_id)
                ledger.ids.append(item_id)
            mine.append(item_id)
            _read_back(base, key, item_id, 200, ledger)
    elif kind == "delete" and mine:
        item_id = mine.pop(rng.randrange(len(mine)))
        answer = client.request("DELETE", f"{COLLECTION}/items/{item_id}")
        ledger.record(kind, answer)
        if answer.status == 204:
            with ledger.lock:
                ledger.deleted.add(item_id)
            _read_back(base, key, item_id, 404, ledger)


def _read_back(base: str, key: dict[str, str], item_id: int, status: int, ledger) -> None:
    """An acknowledged write, read at once over a new connection (so maybe by another worker):
    the item (or its absence), and a search from its stored vector."""
    fresh = Client(base, key)
    search = "not searched"
    try:
        item = fresh.request("GET", f"{COLLECTION}/items/{item_id}")
        found = True
        if status == 200:
            hits = fresh.json("POST", f"{COLLECTION}/search", {"id": item_id, "k": 1})
            first = hits.json()["results"][0]["hits"][:1] if hits.status == 200 else []
            found = [hit["id"] for hit in first] == [item_id]
            search = f"search by id {hits.status}: {hits.body[:300]!r}"
    finally:
        fresh.close()
    if item.status != status or not found:
        with ledger.lock:
            ledger.not_read_back.append(
                f"item {item_id}: {item.status}, expected {status}; {search}"
            )


def run_load(
    server: Server,
    width: int,
    seconds: float,
    clients: int = 16,
    warmup: float = 3.0,
    key: dict[str, str] | None = None,
    seed: int = 0,
    ids: list[int] | None = None,
) -> LoadReport:
    """`clients` threads of mixed requests for `seconds`; worker RSS after `warmup` and at the end;
    then every acknowledged write checked over HTTP."""
    key = key or {}
    ledger = LoadLedger(ids=list(ids or [0]))
    rngs = [random.Random(seed * 1000 + n) for n in range(clients)]
    started = time.monotonic()
    with background(
        lambda n, stop: client_loop(server.base, ledger, width, key, rngs[n], stop), clients
    ):
        time.sleep(warmup)
        warm = {pid: memory_kib(pid) for pid in server.worker_pids()}
        with ledger.lock:
            ledger.seconds.clear()  # latencies after the warm-up only
        time.sleep(max(0.0, seconds - warmup))
        end = {pid: memory_kib(pid) for pid in server.worker_pids() if pid in warm}
    report = summarise(ledger, time.monotonic() - started, clients, server.workers, warm, end)
    report.lost = len(lost_writes(server.base, key, ledger))
    return report


def summarise(ledger: LoadLedger, seconds, clients, workers, warm, end) -> LoadReport:
    every = [s for values in ledger.seconds.values() for s in values]
    by_kind = {
        kind: (len(values), percentile_ms(values, 50), percentile_ms(values, 99))
        for kind, values in sorted(ledger.seconds.items())
    }
    return LoadReport(
        seconds=seconds,
        clients=clients,
        workers=workers,
        served=sum(ledger.statuses.values()),
        by_kind=by_kind,
        five_xx=sum(n for (_, status), n in ledger.statuses.items() if status >= 500),
        unexpected=ledger.unexpected,
        cut_off=dict(ledger.cut_off),
        acknowledged_uploads=len(ledger.acknowledged),
        acknowledged_deletes=len(ledger.deleted),
        not_read_back=ledger.not_read_back,
        lost=0,
        rss_warm_kib=warm,
        rss_end_kib=end,
        p50_ms=percentile_ms(every, 50),
        p99_ms=percentile_ms(every, 99),
    )


def lost_writes(base: str, key: dict[str, str], ledger: LoadLedger) -> list[int]:
    """Acknowledged uploads the server no longer serves, and acknowledged deletes it does."""
    client, lost = Client(base, key), []
    for item_id in sorted(ledger.acknowledged):
        answer = client.request("GET", f"{COLLECTION}/items/{item_id}")
        if answer.status != (404 if item_id in ledger.deleted else 200):
            lost.append(item_id)
    client.close()
    return lost


def lost_on_disk(path: Path, ledger: LoadLedger) -> list[int]:
    """The same check against the collection on disk (after the server stopped)."""
    stored = set(Collection.open(path).items(["id"]).column("id").to_pylist())
    live = ledger.acknowledged - ledger.deleted
    return sorted((live - stored) | (ledger.deleted & stored))


# ----- SIGTERM under load -------------------------------------------------------------------


@dataclass
class ShutdownReport:
    exit_code: int
    seconds_to_exit: float
    probes: int
    probes_answered: int  # 201 with every item
    probes_started: int  # an image of it stored: the server read it (the others were refused)
    probes_in_flight: int  # answered after the signal: accepted before it, finished after
    served_after_signal: int
    five_xx: int
    unexpected: list[str]
    cut_off: dict[str, int]  # requests refused or dropped once the server stopped accepting
    acknowledged: int
    lost: int

    def lines(self) -> list[str]:
        return [
            f"SIGTERM under load: exit {self.exit_code} after {self.seconds_to_exit:.1f} s; "
            f"uploads in flight at the signal: {self.probes_in_flight}, answered 201: "
            f"{self.probes_answered} of {self.probes} ({self.probes_started} read by the server, "
            f"the others refused whole); requests answered after the signal: "
            f"{self.served_after_signal}, 5xx: {self.five_xx}",
            f"  connections refused or closed once it stopped accepting: {self.cut_off or 0}; "
            f"acknowledged writes {self.acknowledged}, lost: {self.lost}",
        ]


PROBE_IMAGES = 8


def _probe(base: str, key: dict[str, str], seed: int, answers: dict) -> None:
    """Eight 256 px images in one upload: slow enough to be in flight when SIGTERM comes."""
    images = [(f"{seed}-{n}.png", noise_png(seed * 100 + n, size=256)) for n in range(PROBE_IMAGES)]
    try:
        answer = Client(base, key, timeout=120).upload(f"{COLLECTION}/items", images)
    except (OSError, http.client.HTTPException):  # refused: the server had stopped accepting
        return
    answers[seed] = (answer, time.monotonic())


def _stored(path: Path, seed: int, number: int = 0) -> Path:
    digest = hashlib.sha256(noise_png(seed * 100 + number, size=256)).hexdigest()
    return path / "uploads" / digest[:2] / f"{digest}.png"


def sigterm_under_load(
    server: Server,
    path: Path,
    width: int,
    key: dict[str, str],
    clients: int = 16,
    seconds_before: float = 3.0,
    probes: int = 4,
) -> ShutdownReport:
    """Mixed load, then `probes` big uploads; as soon as the first one's first image is stored
    (the server is processing it), SIGTERM to the master. Every probe the server read must be
    answered (one still waiting to be accepted is refused whole); every acknowledged write must
    be on disk once the server has exited."""
    ledger = LoadLedger(ids=Collection.open(path).items(["id"]).column("id").to_pylist())
    rngs = [random.Random(n) for n in range(clients)]
    answers: dict[int, tuple[Answer, float]] = {}
    seeds = range(90_001, 90_001 + probes)
    with background(
        lambda n, stop: client_loop(server.base, ledger, width, key, rngs[n], stop), clients
    ):
        time.sleep(seconds_before)
        senders = [
            threading.Thread(target=_probe, args=(server.base, key, seed, answers))
            for seed in seeds
        ]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 120
        while not any(_stored(path, s).exists() for s in seeds) and time.monotonic() < deadline:
            time.sleep(0.002)
        with ledger.lock:
            before = sum(ledger.statuses.values())
        signalled = time.monotonic()
        code = server.terminate()
        exited = time.monotonic() - signalled
        for sender in senders:
            sender.join(timeout=120)
    answered = [
        (answer, finished)
        for answer, finished in answers.values()
        if answer.status == 201 and len(answer.json()["items"]) == PROBE_IMAGES
    ]
    started = [
        seed for seed in seeds if any(_stored(path, seed, n).exists() for n in range(PROBE_IMAGES))
    ]
    for answer, _ in answered:
        ledger.acknowledged.update(item["id"] for item in answer.json()["items"])
    report = summarise(ledger, 0, clients, server.workers, {}, {})
    return ShutdownReport(
        exit_code=code,
        seconds_to_exit=exited,
        probes=probes,
        probes_answered=len(answered),
        probes_started=len(started),
        probes_in_flight=sum(finished > signalled for _, finished in answers.values()),
        served_after_signal=report.served - before,
        five_xx=report.five_xx,
        unexpected=report.unexpected,
        cut_off=report.cut_off,
        acknowledged=len(ledger.acknowledged) + len(ledger.deleted),
        lost=len(lost_on_disk(path, ledger)),
    )
