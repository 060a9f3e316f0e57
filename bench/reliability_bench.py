"""Reliability under faults, bad input and load, against a real `lookalike serve` on loopback.

    python bench/reliability_bench.py            # 20 crash cycles, 5 minutes of load, 10 bulk kills
    python bench/reliability_bench.py --quick    # 3 crash cycles, 20 s of load, 2 bulk kills

In order, on one collection of the tiny real model (resnet18, random weights, 64 px):
1. crash cycles: 4 clients upload, re-upload and delete while the server's whole process group
   (gunicorn master and workers) is SIGKILLed at a random moment, sometimes while it starts; after
   the last restart every acknowledged upload must be there once, searchable, every acknowledged
   delete gone, no phantom ids, and the index the restart saved must hold exactly the items;
2. the malformed-input corpus (tests/reliability/corpus.py): every answer a 4xx problem+json or a
   correct 2xx, no 5xx, no traceback, /healthz fine after;
3. mixed load from 16 clients (vector, id and image searches, uploads, deletes; every acknowledged
   write read back at once over a new connection), with worker RSS after warm-up and at the end;
4. SIGTERM under load with big uploads in flight: they are answered, nothing acknowledged is lost;
5. a bulk `lookalike embed` SIGKILLed mid-run and resumed, again and again: each image once;
6. how fast decoding bombs are refused.
The drivers live in tests/reliability/ (the test suite runs them shorter). Exits 1 if any
guarantee broke.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the drivers, and conftest's tiny model and photos

from conftest import TINY  # noqa: E402
from reliability.bad_images import bombs, jpeg_scan_bomb  # noqa: E402
from reliability.corpus import corpus, run_corpus  # noqa: E402
from reliability.crash import check_bulk, crash_cycles, embed_command, kill_bulk_runs  # noqa: E402
from reliability.harness import noise_png  # noqa: E402
from reliability.load import run_load, sigterm_under_load  # noqa: E402

from lookalike.classify import train_classifier  # noqa: E402
from lookalike.embedder import get_backbone  # noqa: E402
from lookalike.embedder.sources import decode_image  # noqa: E402
from lookalike.errors import BadImage  # noqa: E402
from lookalike.server.decoding import screen  # noqa: E402
from lookalike.store.collection import Collection  # noqa: E402

WORKDIR = ROOT / "bench-data" / "reliability"
READ, WRITE = "bench-reader", "bench-writer"
WRITER = {"Authorization": f"Bearer {WRITE}"}
MAX_UPLOAD = 4 * 2**20
SCHEMATHESIS_EXAMPLES = 12  # per operation, tests/test_openapi.py


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def show(lines: list[str]) -> None:
    print("\n".join(lines), flush=True)


def bulk_kills(kills: int, images: int, seed: int) -> tuple[list[str], bool]:
    folder, collection = WORKDIR / "bulk-images", WORKDIR / "bulk"
    folder.mkdir()
    for number in range(images):
        (folder / f"{number:04d}.png").write_bytes(noise_png(number, size=40))
    killed, finished = kill_bulk_runs(folder, collection, kills, seed)
    subprocess.run(embed_command(folder, collection), check=True, capture_output=True)
    report = check_bulk(folder, collection, killed, finished)
    ok = report.embedded_once == report.images and not report.twice and killed > 0
    return report.lines(), ok


def bomb_timings() -> tuple[list[str], list[str]]:
    """How fast each bomb is refused (at the server's default pixel limit); those that are not."""
    worst, name, passed = 0.0, "", []
    for label, data, _ in bombs():
        started = time.perf_counter()
        try:
            screen(data, label, 40_000_000)
            passed.append(f"{label} passed the screening")
        except BadImage:
            pass
        elapsed = time.perf_counter() - started
        if elapsed > worst:
            worst, name = elapsed, label
    refused = len(bombs()) - len(passed)
    lines = [
        f"{refused} of {len(bombs())} bombs refused from their headers, slowest {worst * 1000:.1f} ms ({name})"
    ]
    bomb = jpeg_scan_bomb(side=2000, repeats=1000)
    started = time.perf_counter()
    decode_image(bomb, 40_000_000)  # what the scan limit spares a server thread
    lines.append(
        f"the 1,000-scan 2000x2000 JPEG ({len(bomb) // 1024} kB) takes {time.perf_counter() - started:.1f} s "
        "to decode without the scan limit"
    )
    return lines, passed


def operations(base: str) -> int:
    with urllib.request.urlopen(f"{base}/openapi.json") as answer:
        spec = json.load(answer)
    methods = {"get", "post", "put", "patch", "delete"}
    return sum(len(set(item) & methods) for item in spec["paths"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 cycles, 20 s of load, 2 kills")
    parser.add_argument("--cycles", type=int, help="crash cycles (default 20; quick 3)")
    parser.add_argument("--load-seconds", type=float, help="mixed load (default 300; quick 20)")
    parser.add_argument("--bulk-kills", type=int, help="bulk embed kills (default 10; quick 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cycles = args.cycles or (3 if args.quick else 20)
    load_seconds = args.load_seconds or (20 if args.quick else 300)
    kills = args.bulk_kills or (2 if args.quick else 10)

    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    os.environ["LOOKALIKE_CACHE"] = str(WORKDIR / "engine-cache")  # not the user's cache
    with get_backbone(**TINY) as backbone:
        spec = backbone.spec
    path = Collection.create(WORKDIR / "c", spec).path
    width = spec.dims[spec.layers[0]]
    allowed = WORKDIR / "allowed"
    allowed.mkdir()
    (allowed / "link-out").symlink_to("/etc")
    env = {
        "LOOKALIKE_READ_KEYS": READ,
        "LOOKALIKE_WRITE_KEYS": WRITE,
        "LOOKALIKE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "LOOKALIKE_ALLOWED_ROOTS": str(allowed),
    }
    failures = []
    started = time.monotonic()

    section(f"crash cycles: {cycles}, {args.workers} workers")
    crash, server = crash_cycles(
        path, cycles, seed=args.seed, env=env, headers=WRITER, workers=args.workers
    )
    try:
        show(crash.lines())
        failures += crash.failures()

        section("malformed-input corpus")
        ids = Collection.open(path).items(["id"]).column("id").to_pylist()
        train_classifier(path, "clf", {i: "ab"[n % 2] for n, i in enumerate(ids)}, folds=2)
        item = min(Collection.open(path).items(["id"]).column("id").to_pylist())
        cases = corpus(width, str(allowed), MAX_UPLOAD, item, seed=args.seed)
        report = run_corpus(server.base, cases, WRITE)
        show(report.lines())
        failures += report.failures + [f"cut: {c}" for c in report.cut_off]
        failures += [] if report.healthy_after else ["/healthz failed after the corpus"]
        print(
            f"schemathesis (tests/test_openapi.py): {operations(server.base)} operations x up to "
            f"{SCHEMATHESIS_EXAMPLES} examples each, with and without keys"
        )

        section(f"mixed load: 16 clients, {load_seconds:.0f} s")
        ids = Collection.open(path).items(["id"]).column("id").to_pylist()
        load = run_load(server, width, load_seconds, clients=16, key=WRITER, ids=ids, warmup=10)
        show(load.lines())
        failures += load.unexpected + load.not_read_back + [f"lost {load.lost}"] * bool(load.lost)

        section("SIGTERM under load")
        shutdown = sigterm_under_load(server, path, width, WRITER)
        show(shutdown.lines())
        if (
            shutdown.exit_code
            or shutdown.lost
            or shutdown.probes_answered < shutdown.probes_started
        ):
            failures.append("SIGTERM: " + "; ".join(shutdown.lines()))
        failures += shutdown.unexpected
    finally:
        if server.process.poll() is None:
            server.kill()
    print(f"output of the last server mentions a traceback: {'Traceback' in server.output()}")

    section(f"bulk embed: {kills} SIGKILLs")
    lines, ok = bulk_kills(kills, 60 if args.quick else 150, args.seed)
    show(lines)
    failures += [] if ok else lines

    section("decoding bombs")
    lines, passed = bomb_timings()
    show(lines)
    failures += passed

    section(f"done in {time.monotonic() - started:.0f} s")
    if failures:
        print(f"{len(failures)} guarantees broke:\n" + "\n".join(failures[:40]))
        sys.exit(1)
    print("every guarantee held")


if __name__ == "__main__":
    main()
