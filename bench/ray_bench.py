"""Ray bench: `lookalike embed --ray` (a local Ray on this machine) against the local job on the
same real-photo JPEGs, in one run; then the wall time it projects for 10M and 100M images.

The JPEGs are embed_bench's (crops of scikit-image / scikit-learn photos at ~500x375 and
~1920x1080, half each, made once under bench-data/embed/). In images/s, embedding only:

    (a) baseline: the local job (`embed_images`, decode threads + ONNX Runtime, every core)
    (b) ours: the same call with `ray=RayOptions(...)`, for each actor layout that fits the
        machine's cores; Ray's start-up is timed apart (it is paid once per job, not per image)

and b/a. The collections are compared: the same items and failures, the lowest cosine between
the two vectors of an item. From (b) the bench takes the per-actor rate and the per-task cost
(the time a task takes beyond its images at that rate) and projects wall time for 10M and 100M
images on N nodes: CPU nodes at this machine's per-core rate, and GPU nodes at an assumed rate
per GPU (`--gpu-rate`; no GPU was lent to measure it).

    python bench/ray_bench.py            # 2,000 images
    python bench/ray_bench.py --quick    # 300 images
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from embed_bench import make_images

from lookalike.embedder.pipeline import cpu_cores
from lookalike.jobs.bulk import embed_images
from lookalike.jobs.ray_job import RayOptions
from lookalike.store.collection import Collection

DATA = Path(__file__).resolve().parent.parent / "bench-data" / "embed"
SHARD_SIZE = 100  # images a task: enough tasks for every actor (the default, 1,024, for big jobs)
NODE_SIZES = (1, 8, 64)


def embed(folder: Path, target: Path, ray: RayOptions | None):
    return embed_images([folder], target, progress=False, shard_size=SHARD_SIZE, ray=ray)


def min_cosine(first: Path, second: Path) -> float:
    """The lowest cosine, over items and layers, between the two collections' vectors of a path."""
    a, b = Collection.open(first), Collection.open(second)
    ids_a = {r["path"]: r["id"] for r in a.items(["id", "path"]).to_pylist()}
    ids_b = {r["path"]: r["id"] for r in b.items(["id", "path"]).to_pylist()}
    assert sorted(ids_a) == sorted(ids_b), "the two runs embedded different files"
    assert len(ids_b) == len(b), "a row was written twice"
    paths = sorted(ids_a)
    lowest = 1.0
    for layer in a.spec.layers:
        xa = a.vectors([ids_a[p] for p in paths], layer)
        xb = b.vectors([ids_b[p] for p in paths], layer)
        cosine = (xa * xb).sum(1) / np.linalg.norm(xa, axis=1) / np.linalg.norm(xb, axis=1)
        lowest = min(lowest, float(cosine.min()))
    return lowest


def layouts(cores: int) -> list[tuple[int, float]]:
    """(actors, CPUs each) that use every core: one wide actor, and one actor a core."""
    return sorted({(1, float(cores)), (cores, 1.0)})


def project(images: float, rate_per_node: float, tasks: float, task_seconds: float, nodes: int,
            actors_per_node: int) -> float:  # fmt: skip
    """Hours for `images` on `nodes` nodes: the images at the nodes' rate, plus each task's own
    cost spread over every actor."""
    seconds = images / (rate_per_node * nodes) + tasks * task_seconds / (nodes * actors_per_node)
    return seconds / 3600


def task_cost(folder: Path, scratch: Path, count: int = 40) -> float:
    """Seconds one task costs beyond its images: `count` images as `count` one-image tasks,
    against the same images as one task, on one actor (its start-up paid in both)."""
    images = scratch / "probe"
    for number, path in enumerate(sorted(folder.rglob("*.jpg"))[:count]):
        images.mkdir(parents=True, exist_ok=True)
        (images / f"{number:05d}.jpg").symlink_to(path.resolve())
    one = RayOptions(actors=(1, 1), cpus_per_actor=float(cpu_cores()))
    many = embed_images([images], scratch / "many", progress=False, shard_size=1, ray=one)
    whole = embed_images([images], scratch / "whole", progress=False, shard_size=count, ray=one)
    return max(0.0, (many.seconds - whole.seconds) / (count - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 images, one round")
    parser.add_argument("--images", type=int, help="how many JPEGs (default 2,000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds, best kept (default 2)")
    parser.add_argument("--gpu-rate", type=float, default=2000.0,
                        help="assumed images/s of one GPU actor, for the projection")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    count = args.images or (300 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 2)
    folder = make_images(DATA, count)
    sources = sorted(p for p in folder.rglob("*.jpg") if int(p.stem) < count)
    import ray

    cores = cpu_cores()
    print(f"{count} JPEGs, {cores} cores, {SHARD_SIZE} images a task, best of {rounds} rounds")
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        subset = scratch / "images"
        for number, path in enumerate(sources):
            (subset / path.parent.name).mkdir(parents=True, exist_ok=True)
            (subset / path.parent.name / f"{number:05d}.jpg").symlink_to(path)
        embed(subset, scratch / "warm", None)  # the engine's export, made once, apart
        started = time.perf_counter()
        ray.init(
            num_cpus=cores, logging_level="ERROR", log_to_driver=False, include_dashboard=False
        )
        startup = time.perf_counter() - started
        best: dict[str, float] = {}
        for number in range(rounds):  # interleaved: a busy moment hits both sides alike
            for actors, cpus in [(0, 0.0), *layouts(cores)]:
                name = "local" if not actors else f"{actors}x{cpus:g}"
                target = scratch / f"{name}-{number}"
                options = (
                    RayOptions(actors=(actors, actors), cpus_per_actor=cpus) if actors else None
                )
                report = embed(subset, target, options)
                best[name] = max(best.get(name, 0.0), report.images_per_second)
                if actors:
                    cosine = min_cosine(scratch / "local-0", target)
                    print(f"    round {number + 1}, {name}: {report.images_per_second:.1f} "
                          f"images/s, min cosine to local {cosine:.6f}")  # fmt: skip
                if number or actors:  # the first local run is what the others are compared to
                    shutil.rmtree(target)
        per_task = task_cost(subset, scratch)
        ray.shutdown()
    local = best.pop("local")
    print(f"(a) baseline, local job: {local:7.1f} images/s")
    print(f"    Ray start-up: {startup:.1f} s (once per job, not counted below)")
    for name, found in best.items():
        actors, cpus = name.split("x")
        print(f"(b) ours, --ray {actors} actor(s) x {cpus} CPU: {found:7.1f} images/s, "
              f"ratio b/a {found / local:.2f}")  # fmt: skip
    name, found = max(best.items(), key=lambda kv: kv[1])
    ratio = found / local
    print(f"best: {name}, ratio {ratio:.2f} ({'reached' if ratio >= 0.8 else 'NOT reached'}: "
          f">= 0.8); per-task cost {per_task:.3f} s")  # fmt: skip
    per_core = found / cores
    print(
        "\nprojected wall time, hours (tasks of 1,024 images; CPU nodes of 32 cores at "
        f"{per_core:.1f} images/s a core; GPU nodes of 8 GPUs at {args.gpu_rate:g} images/s each)"
    )
    print(f"{'images':>8} {'nodes':>6} {'CPU':>9} {'GPU':>9}")
    for images in (10e6, 100e6):
        for nodes in NODE_SIZES:
            cpu = project(images, per_core * 32, images / 1024, per_task, nodes, 32)
            gpu = project(images, args.gpu_rate * 8, images / 1024, per_task, nodes, 8)
            print(f"{images / 1e6:>7.0f}M {nodes:>6} {cpu:>9.1f} {gpu:>9.2f}")


if __name__ == "__main__":
    main()
