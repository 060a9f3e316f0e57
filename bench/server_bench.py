"""HTTP serving: vector and image search through a real server on loopback, against in-process calls.

    python bench/server_bench.py            # 100k x 1280 collection, 20 s load runs
    python bench/server_bench.py --quick    # 20k x 1280, 5 s load runs, about a minute

Vector search: `wrk` (C, one thread, keep-alive connections) posts JSON query vectors to
`/v1/collections/bench/search`, served by `lookalike serve` (gunicorn, gthread workers). The load
generator shares the machine's cores with the server; its own CPU time is measured and printed.
The baseline is the same `Searcher.search_vectors` call in this process, one query at a time.

Image search: one client posts real photos (JPEG, 640x480) one at a time to `/search/images`
(upload, decode, preprocess, embed, search); the baseline is the bare model on one preprocessed
image, in this process. Needs `wrk` (Debian package) for the vector part; without it, that part is
skipped with the reason.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lookalike.embedder import get_backbone
from lookalike.embedder.preprocess import build_transform
from lookalike.index import set_search_threads
from lookalike.index.maintain import build_index
from lookalike.index.search import Searcher
from lookalike.server.serve import READY_LINE
from lookalike.store.collection import Collection

WORKDIR = Path("bench-data/server")
LUA = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def clustered_unit_vectors(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """Points around random centres, L2-normalised: a stand-in for a catalogue's embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d), np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def build_collection(folder: Path, n: int) -> Collection:
    """A collection with the offline default's spec and `n` synthetic vectors, indexed (cached)."""
    if Collection.exists(folder) and len(Collection.open(folder)) == n:
        return Collection.open(folder)
    shutil.rmtree(folder, ignore_errors=True)
    with get_backbone() as backbone:
        collection = Collection.create(folder, backbone.spec)
    layer = collection.spec.layers[0]
    width = collection.spec.dims[layer]
    with collection.writer(shard_size=10_000) as writer:
        for start in range(0, n, 10_000):
            count = min(10_000, n - start)
            vectors = clustered_unit_vectors(count, width, 64, seed=start)
            rows = [
                {"path": f"synthetic/{start + i}.jpg", "label": f"group-{(start + i) % 10}"}
                for i in range(count)
            ]
            writer.add(rows, {layer: vectors})
    build_index(collection, progress=False)
    return collection


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def in_process_vector_search(searcher: Searcher, queries: np.ndarray, k: int, threads: int) -> dict:
    """The library function the route calls, one query a call, from `threads` threads at once."""
    set_search_threads(1)
    searcher.search_vectors(queries[0], k)
    times: list[float] = []

    def run(part: np.ndarray) -> None:
        set_search_threads(1)  # as the server's request threads do
        for query in part:
            t = time.perf_counter()
            searcher.search_vectors(query, k)
            times.append(time.perf_counter() - t)

    parts = np.array_split(queries, threads)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, parts))
    total = time.perf_counter() - started
    p50, p99 = percentiles_ms(times)
    return {"rps": len(queries) / total, "p50": p50, "p99": p99}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    folder: Path, port: int, workers: int, threads: int, log: Path
) -> subprocess.Popen:
    """`lookalike serve` in a child process logging to `log`; returns once every worker is ready."""
    command = [
        sys.executable, "-m", "lookalike", "serve", f"bench={folder}",
        "--port", str(port), "--workers", str(workers), "--threads", str(threads),
    ]  # fmt: skip
    with log.open("w") as sink:
        server = subprocess.Popen(command, stderr=sink, stdout=sink)
    while log.read_text().count(READY_LINE) < workers:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}: see {log}")
        time.sleep(0.2)
    return server


def run_wrk(url: str, bodies: Path, connections: int, seconds: int) -> dict:
    """Drive `url` with wrk; requests/s, latency percentiles, non-2xx count and wrk's CPU time."""
    script = bodies.with_suffix(".lua")
    script.write_text(LUA % {"bodies": bodies})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    def latency_ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "p50": latency_ms("50"),
        "p99": latency_ms("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
        "wrk_cpu_share": cpu / seconds,
    }


def photo_jpegs(count: int) -> list[bytes]:
    """Real photos from scikit-image, cropped and re-encoded as 640x480 JPEGs."""
    from PIL import Image
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    encoded = []
    for i in range(count):
        image = Image.fromarray(photos[i % len(photos)]).convert("RGB")
        left = (i * 7) % max(1, image.width // 8)
        image = image.crop((left, 0, image.width - left, image.height)).resize((640, 480))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def post_image(url: str, jpeg: bytes, k: int) -> None:
    boundary = "lookalike-bench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request) as answer:
        json.load(answer)


def image_search(base: str, jpegs: list[bytes], k: int) -> dict:
    url = f"{base}/v1/collections/bench/search/images"
    post_image(url, jpegs[0], k)
    times = []
    for jpeg in jpegs:
        started = time.perf_counter()
        post_image(url, jpeg, k)
        times.append(time.perf_counter() - started)
    p50, p99 = percentiles_ms(times)
    return {"p50": p50, "p99": p99}


def bare_model_ms(jpegs: list[bytes], repeats: int, folder: Path) -> tuple[float, float, str]:
    """The model the server runs (same engine choice), alone on one preprocessed image (batch 1):
    p50 and p99 in ms, and the engine."""
    from PIL import Image

    with get_backbone(engine="auto", collection_dir=folder) as backbone:
        transform = build_transform(backbone.spec.preprocess)
        tensors = [transform(Image.open(io.BytesIO(j)).convert("RGB"))[None] for j in jpegs]
        backbone.embed(tensors[0])
        times = []
        for i in range(repeats):
            started = time.perf_counter()
            backbone.embed(tensors[i % len(tensors)])
            times.append(time.perf_counter() - started)
        engine = backbone.engine_name
    return (*percentiles_ms(times), engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k items, 5 s load runs")
    parser.add_argument("--items", type=int, help="collection size (default 100k; quick 20k)")
    parser.add_argument("--seconds", type=int, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="per worker (serve's default)")
    parser.add_argument("--images", type=int, default=60, help="image search requests")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    n = args.items or (20_000 if args.quick else 100_000)
    seconds = args.seconds or (5 if args.quick else 20)
    folder = WORKDIR / f"{n}"
    WORKDIR.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    collection = build_collection(folder, n)
    print(f"collection: {n} x {collection.spec.dims[collection.spec.layers[0]]} "
          f"({collection.spec.backbone}), ready in {time.perf_counter() - started:.1f} s")  # fmt: skip
    searcher = Searcher.open(folder)
    print("index: {} {}".format(*searcher.vector_store.describe()))
    # stored items plus a little noise: queries land where the catalogue is
    queries = collection.vectors(np.random.default_rng(1).integers(0, n, 2000))
    queries = queries + 0.05 * np.random.default_rng(2).standard_normal(queries.shape, np.float32)
    single = in_process_vector_search(searcher, queries, args.k, threads=1)
    baseline = in_process_vector_search(searcher, queries, args.k, threads=args.workers)
    bodies = WORKDIR / "queries.jsonl"
    bodies.write_text(
        "\n".join(json.dumps({"vector": np.round(q, 6).tolist(), "k": args.k}) for q in queries)
    )
    jpegs = photo_jpegs(args.images)
    model_p50, model_p99, engine = bare_model_ms(jpegs, args.images, folder)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(folder, port, args.workers, args.threads, WORKDIR / "server.log")
    try:
        print(f"server: gunicorn, {args.workers} workers x {args.threads} threads on 127.0.0.1")
        print(
            f"\nvector search, k={args.k}, {args.connections} keep-alive connections, {seconds} s"
        )
        print(f"{'':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{'in-process, 1 thread':<28} {single['rps']:>8.0f} {single['p50']:>8.2f} "
              f"{single['p99']:>8.2f}")  # fmt: skip
        print(f"{f'in-process, {args.workers} threads (baseline)':<28} {baseline['rps']:>8.0f} "
              f"{baseline['p50']:>8.2f} {baseline['p99']:>8.2f}")  # fmt: skip
        if shutil.which("wrk"):
            run_wrk(f"{base}/v1/collections/bench/search", bodies, args.connections, 2)  # warm
            http = run_wrk(f"{base}/v1/collections/bench/search", bodies, args.connections, seconds)
            print(f"{'HTTP (lookalike serve)':<28} {http['rps']:>8.0f} {http['p50']:>8.2f} "
                  f"{http['p99']:>8.2f}")  # fmt: skip
            print(f"HTTP / in-process throughput: {http['rps'] / baseline['rps']:.2f}")
            print(f"{http['requests']} requests, {http['non_2xx']} non-2xx, socket errors: "
                  f"{http['socket_errors']}; wrk used {http['wrk_cpu_share']:.0%} of one core "
                  f"of the 2 it shares with the server")  # fmt: skip
        else:
            print("HTTP: skipped, `wrk` is not installed (apt-get install wrk)")
        result = image_search(base, jpegs, args.k)
        print("\nimage search (640x480 JPEG upload -> decode -> embed -> search), one client")
        print(f"{'':<28} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{f'bare model ({engine}), batch 1':<28} {model_p50:>8.1f} {model_p99:>8.1f}")
        print(f"{'HTTP /search/images':<28} {result['p50']:>8.1f} {result['p99']:>8.1f}")
        print(f"HTTP / bare model (p50): {result['p50'] / model_p50:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
