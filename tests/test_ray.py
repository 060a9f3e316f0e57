"""Bulk embedding on a real Ray cluster: two nodes of one CPU each, started here
(`ray.cluster_utils.Cluster`). The same collection as a local run; a node lost mid-job and a
driver killed mid-job leave no row written twice and none missing."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, small_tmpfs, write_bad_files
from PIL import Image

from lookalike.cli import main
from lookalike.embedder import get_backbone
from lookalike.jobs.bulk import embed_images
from lookalike.jobs.ray_job import RayFailed, RayOptions, import_ray
from lookalike.store.collection import Collection

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and one worker node, one CPU each; this process is the driver."""
    started = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    started.add_node(num_cpus=1)
    ray.init(address=started.address, logging_level="WARNING", log_to_driver=False)
    yield started
    ray.shutdown()
    started.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small real-format images in labelled folders, and one bad file of each kind."""
    root = tmp_path_factory.mktemp("ray-images")
    rng = np.random.default_rng(0)
    for index in range(24):
        folder = root / f"label{index % 3}"
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.{'png' if index % 2 else 'jpg'}")
    write_bad_files(root / "bad")
    return root


def by_path(path: Path) -> tuple[Collection, dict[str, int]]:
    collection = Collection.open(path)
    items = collection.items(["id", "path"]).to_pylist()
    counts = collections.Counter(i["path"] for i in items)
    assert max(counts.values()) == 1, (
        f"rows written twice: {[p for p, n in counts.items() if n > 1]}"
    )
    return collection, {i["path"]: i["id"] for i in items}


def assert_same_collection(expected: Path, found: Path) -> None:
    """The same items (no path twice), vectors (cosine >= 0.9999) and failures."""
    local, local_ids = by_path(expected)
    on_ray, ray_ids = by_path(found)
    assert sorted(ray_ids) == sorted(local_ids)
    paths = sorted(local_ids)
    for layer in local.spec.layers:
        a = local.vectors([local_ids[p] for p in paths], layer)
        b = on_ray.vectors([ray_ids[p] for p in paths], layer)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() >= 0.9999, layer
    labels = {i["path"]: i["label"] for i in on_ray.items(["path", "label"]).to_pylist()}
    assert labels == {i["path"]: i["label"] for i in local.items(["path", "label"]).to_pylist()}
    assert {f["path"]: f["reason"] for f in on_ray.failures()} == {
        f["path"]: f["reason"] for f in local.failures()
    }
    assert not list((found / "staging").iterdir())  # every staged task adopted


@pytest.fixture(scope="module")
def local_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local") / "c"
    embed_images([images], path, TINY, labels_from_folders=True, progress=False)
    return path


def test_ray_writes_the_collection_a_local_run_writes(cluster, images, local_run, tmp_path):
    options = RayOptions(actors=(2, 2))
    report = embed_images(
        [images], tmp_path / "c", TINY, labels_from_folders=True, progress=False, shard_size=5,
        ray=options,
    )  # fmt: skip
    assert (report.embedded, len(report.failed)) == (24, 6)
    assert_same_collection(local_run, tmp_path / "c")
    again = embed_images([images], tmp_path / "c", TINY, labels_from_folders=True, ray=options)
    assert (again.embedded, again.skipped_done, again.skipped_known_bad) == (0, 24, 6)


def test_a_node_lost_mid_job_loses_and_repeats_nothing(cluster, images, local_run, tmp_path):
    """The worker node is removed once the first task is committed (a new one joins, as an
    autoscaler would add it); Ray restarts the lost actor and retries its task."""
    worker = next(node for node in cluster.worker_nodes)
    lost = []

    def remove_worker(done: int, total: int) -> None:
        if not lost:
            lost.append(done)
            cluster.remove_node(worker)
            cluster.add_node(num_cpus=1)

    embed_images(
        [images], tmp_path / "c", TINY, labels_from_folders=True, progress=False, shard_size=3,
        ray=RayOptions(actors=(2, 2)), on_progress=remove_worker,
    )  # fmt: skip
    assert lost and lost[0] < 30, "the node was not removed mid-job"
    assert_same_collection(local_run, tmp_path / "c")


def test_a_driver_killed_mid_job_is_rerun_without_duplicates(cluster, images, local_run, tmp_path):
    """`lookalike embed --ray ADDRESS` SIGKILLed after its first commit; the rerun finishes."""
    command = [
        sys.executable, "-m", "lookalike", "-v", "embed", str(images), "-c", str(tmp_path / "c"),
        "--backbone", TINY["name"], "--weights", "none", "--image-size", str(TINY["image_size"]),
        "--labels-from-folders", "--shard-size", "3", "-q", "--ray-actors", "1,2",
        "--ray", cluster.address,
    ]  # fmt: skip
    driver = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    output = []
    try:
        for line in driver.stderr:
            output.append(line)
            if "as shard 000001" in line:
                driver.send_signal(signal.SIGKILL)
                break
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, f"not killed mid-job: {''.join(output)[-2000:]}"
    committed = len(Collection.open(tmp_path / "c"))
    assert 0 < committed < 24
    rerun = subprocess.run(
        [*command[:3], *command[4:]], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{committed} skipped as done" in rerun.stdout
    assert_same_collection(local_run, tmp_path / "c")


def test_clear_errors_for_a_missing_ray_or_cluster_and_bad_options(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="1 <= min <= max"):
        RayOptions(actors=(3, 2))
    result = subprocess.run(
        [sys.executable, "-m", "lookalike", "embed", str(tmp_path), "-c", str(tmp_path / "c"),
         "--ray-actors", "0,2", "--ray"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "1 <= MIN <= MAX" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        for given in (address, f"ray://{address}"):
            with pytest.raises(RayFailed, match="cannot reach the Ray cluster"):
                embed_images([tmp_path], tmp_path / "c", TINY, ray=given)
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        embed_images([tmp_path], tmp_path / "c", TINY, ray="my-cluster")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(RayFailed, match=r"pip install 'lookalike\[ray\]'"):
        import_ray()
    with pytest.raises(RayFailed, match="not installed"):
        embed_images([tmp_path], tmp_path / "c", TINY, ray="local")
    assert not (tmp_path / "c").exists()  # each said before anything was written


def test_a_full_disk_under_an_actor_is_the_one_line_storage_full(cluster, images, tmp_path):
    """An actor's StorageFull (staging its task on a full disk) came out as a 10-line chain of
    Ray exceptions, the one line that says what to do buried in it."""
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        with get_backbone(**TINY) as backbone:
            Collection.create(disk / "c", backbone.spec)
        free = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 4096))
        answer = CliRunner().invoke(
            main,
            ["embed", str(images), "-c", str(disk / "c"), "--engine", "torch", "-q",
             "--shard-size", "5", "--ray-actors", "1,1", "--ray", "local"],
        )  # fmt: skip
    assert answer.exit_code == 1
    last = answer.output.strip().splitlines()[-1]
    assert last.startswith("Error: no space left on the device holding"), answer.output
    assert last.endswith("free some space and retry"), answer.output  # one line, nothing added
    for chained in ("Traceback", "RayTaskError", "ray::", "UDF", "The above exception"):
        assert chained not in answer.output, answer.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cluster_with_a_gpu_embeds_on_it_as_the_local_gpu_job(cluster, images, tmp_path):
    """A node with a GPU joins: the actors take one GPU each and run torch on it."""
    cluster.add_node(num_cpus=1, num_gpus=1)
    local = tmp_path / "local"
    embed_images([images], local, TINY, labels_from_folders=True, device="cuda", progress=False)
    report = embed_images(
        [images], tmp_path / "c", TINY, labels_from_folders=True, progress=False, shard_size=5,
        ray=RayOptions(actors=(1, 1)),
    )  # fmt: skip
    assert "GPU" in report.engine
    assert_same_collection(local, tmp_path / "c")
