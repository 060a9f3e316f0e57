"""`embed` keeps a collection in step with its folder; only regular files are read, and only
inside `within`; a second run waits for the first; bad limits and a full disk are named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, photo, small_tmpfs

from lookalike.cli import main
from lookalike.errors import InvalidArgument, StorageFull
from lookalike.index import Searcher, build_index, update_index
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection


def embed(folder: Path, collection: Path, **options):
    return embed_images([folder], collection, TINY, progress=False, num_workers=0, **options)


def live_paths(collection: Path) -> dict[str, int]:
    items = Collection.open(collection).items(["id", "path"])
    return dict(zip(items["path"].to_pylist(), items["id"].to_pylist(), strict=True))


@pytest.mark.slow
def test_a_changed_file_gets_a_new_vector_and_its_old_item_a_tombstone(tmp_path: Path) -> None:
    """The hostile pass: replace a.png (astronaut) by a cat, embed again: it said "0 embedded, 2
    skipped as done" and a search for a.png found its own path at distance 0.87."""
    folder = tmp_path / "images"
    folder.mkdir()
    photo("astronaut").save(folder / "a.png")
    photo("coffee").save(folder / "b.png")
    first = embed(folder, tmp_path / "c")
    assert first.embedded == 2
    old_id = live_paths(tmp_path / "c")[str(folder / "a.png")]
    build_index(Collection.open(tmp_path / "c"), progress=False)

    photo("chelsea").save(folder / "a.png")
    second = embed(folder, tmp_path / "c")
    assert (second.embedded, second.changed, second.skipped_done) == (1, 1, 1)
    assert "1 embedded (1 changed)" in second.summary()
    ids = live_paths(tmp_path / "c")
    assert len(ids) == 2 and ids[str(folder / "a.png")] != old_id
    update = update_index(Collection.open(tmp_path / "c"))  # the index follows
    assert (update.added, update.removed, update.total) == (1, 1, 2)
    hit = Searcher.open(tmp_path / "c").search_images([folder / "a.png"], k=1)[0][0]
    assert hit.path == str(folder / "a.png") and hit.distance < 1e-4

    again = embed(folder, tmp_path / "c")  # nothing changed since: nothing to do
    assert (again.embedded, again.changed, again.skipped_done) == (0, 0, 2)


def test_a_deleted_item_stays_deleted_until_its_file_changes(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    photo("rocket").save(folder / "r.png")
    embed(folder, tmp_path / "c")
    with Collection.open(tmp_path / "c").writer() as writer:
        writer.delete([0])
    assert embed(folder, tmp_path / "c").embedded == 0  # a delete sticks
    photo("coffee").save(folder / "r.png")
    report = embed(folder, tmp_path / "c")
    assert (report.embedded, report.changed) == (1, 1)
    assert list(live_paths(tmp_path / "c").values()) == [1]


def test_checksum_finds_a_change_that_kept_size_and_mtime(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    target = folder / "x.bmp"  # BMP: the same size whatever the pixels
    photo("astronaut").resize((32, 32)).save(target)
    embed(folder, tmp_path / "c")
    stat = target.stat()
    photo("chelsea").resize((32, 32)).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size
    assert embed(folder, tmp_path / "c").changed == 0  # size and mtime alike: taken as unchanged
    report = embed(folder, tmp_path / "c", checksum=True)
    assert (report.embedded, report.changed) == (1, 1)


def test_prune_and_remove_missing_take_out_files_gone_from_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket"):
        photo(name).save(folder / f"{name}.png")
    embed(folder, tmp_path / "c")
    (folder / "coffee.png").unlink()
    kept = embed(folder, tmp_path / "c")  # without --prune a vanished file is kept
    assert kept.removed == 0 and len(live_paths(tmp_path / "c")) == 3
    pruned = embed(folder, tmp_path / "c", prune=True)
    assert pruned.removed == 1 and str(folder / "coffee.png") not in live_paths(tmp_path / "c")

    (folder / "rocket.png").unlink()
    runner = CliRunner()
    dry = runner.invoke(main, ["remove", "-c", str(tmp_path / "c"), "--missing", "--dry-run"])
    assert dry.exit_code == 0 and "1 items would be removed" in dry.output
    assert len(live_paths(tmp_path / "c")) == 2
    done = runner.invoke(main, ["remove", "-c", str(tmp_path / "c"), "--missing"])
    assert done.exit_code == 0, done.output
    assert list(live_paths(tmp_path / "c")) == [str(folder / "astronaut.png")]
    unknown = runner.invoke(main, ["remove", "-c", str(tmp_path / "c"), "999"])
    assert unknown.exit_code == 1 and "no item with id 999" in unknown.output


def test_prune_leaves_items_outside_the_folders_of_the_run(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        photo("coffee" if name == "one" else "rocket").save(tmp_path / name / "p.png")
    embed(tmp_path / "one", tmp_path / "c")
    embed(tmp_path / "two", tmp_path / "c", prune=True)
    assert len(live_paths(tmp_path / "c")) == 2


@pytest.mark.slow
def test_a_fifo_is_recorded_as_failed_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named *.jpg hung `embed` forever (open blocks until a writer comes)."""
    folder = tmp_path / "images"
    folder.mkdir()
    photo("coffee").save(folder / "good.png")
    os.mkfifo(folder / "pipe.jpg")
    command = [sys.executable, "-m", "lookalike", "embed", str(folder), "-c", str(tmp_path / "c")]
    command += ["--backbone", "resnet18", "--weights", "none", "--image-size", "64", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "pipe.jpg: cannot read: not a regular file (a FIFO)" in done.stderr
    assert list(live_paths(tmp_path / "c")) == [str(folder / "good.png")]


def test_within_refuses_a_file_link_out_of_the_allowed_folders(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    photo("astronaut").save(outside / "secret.png")
    folder = tmp_path / "allowed"
    folder.mkdir()
    photo("coffee").save(folder / "own.png")
    (folder / "cam.png").symlink_to(outside / "secret.png")
    (folder / "twin.png").symlink_to(folder / "own.png")  # a link inside the root is fine
    report = embed(folder, tmp_path / "c", within=[folder.resolve()])
    assert sorted(Path(p).name for p in live_paths(tmp_path / "c")) == ["own.png", "twin.png"]
    assert [Path(f["path"]).name for f in report.failed] == ["cam.png"]
    assert "outside the allowed folders" in report.failed[0]["reason"]


@pytest.mark.slow
def test_a_second_run_into_a_new_collection_waits_and_resumes(tmp_path: Path) -> None:
    """Two `embed` runs creating the same collection: the second failed ("already holds a
    collection"); now it waits for the first and finds the work done."""
    folder = tmp_path / "images"
    folder.mkdir()
    for number in range(24):
        photo("coffee").rotate(number * 15).save(folder / f"{number:02d}.png")
    command = [sys.executable, "-m", "lookalike", "embed", str(folder), "-c", str(tmp_path / "c")]
    command += ["--backbone", "resnet18", "--weights", "none", "--image-size", "64", "-q"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    embedded = sorted(int(out.split(" embedded")[0].rsplit(", ", 1)[1]) for out, _ in outputs)
    assert embedded == [0, 24]
    assert len(live_paths(tmp_path / "c")) == 24 == len(Collection.open(tmp_path / "c"))


@pytest.mark.slow
def test_a_cancel_keeps_what_was_committed_and_a_rerun_finishes(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for number in range(12):
        photo("rocket").rotate(number * 20).save(folder / f"{number:02d}.png")
    batches = []
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        batches.append(done)
        if done >= 4:
            stop.set()

    from lookalike.errors import Cancelled

    with pytest.raises(Cancelled, match="stopped on request after 4 of 12"):
        embed(folder, tmp_path / "c", batch_size=4, on_progress=progress, should_stop=stop.is_set)
    assert len(live_paths(tmp_path / "c")) == 4
    report = embed(folder, tmp_path / "c")
    assert (report.embedded, report.skipped_done) == (8, 4)


def test_max_pixels_above_pillows_own_limit_is_refused(tmp_path: Path, photo_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="Pillow's decompression-bomb limit"):
        embed(photo_dir, tmp_path / "c", max_pixels=300_000_000)
    answer = CliRunner().invoke(
        main, ["embed", str(photo_dir), "-c", str(tmp_path / "c"), "--max-pixels", "300000000"]
    )
    assert answer.exit_code == 2 and "--max-pixels" in answer.output
    assert not (tmp_path / "c").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "3m") as mount:
        yield mount


@pytest.mark.slow
def test_a_full_disk_is_named_and_the_resume_is_exact(tmp_path: Path, small_disk: Path) -> None:
    """On a full disk `embed` stopped with "64000 requested and 34784 written"."""
    folder = tmp_path / "images"
    folder.mkdir()
    for number in range(40):
        photo("coffee").rotate(number * 9).save(folder / f"{number:02d}.png")
    free = os.statvfs(small_disk)
    filler = small_disk / "filler"  # leaves room for the manifest and two shards of 8, not more
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 56 * 2**10))
    with pytest.raises(StorageFull, match="no space left on the device holding"):
        embed_images(
            [folder], small_disk / "c", TINY, progress=False, num_workers=0, shard_size=8,
            engine="torch",
        )  # fmt: skip
    committed = len(Collection.open(small_disk / "c"))
    assert 0 < committed < 40
    assert not list((small_disk / "c" / "shards").glob(".tmp-*"))  # its space given back
    answer = CliRunner().invoke(
        main,
        [
            "embed",
            str(folder),
            "-c",
            str(small_disk / "c"),
            "--shard-size",
            "8",
            "--engine",
            "torch",
        ],
    )
    assert answer.exit_code == 1 and "no space left on the device" in answer.output
    filler.unlink()
    report = embed_images(
        [folder], small_disk / "c", progress=False, num_workers=0, shard_size=8, engine="torch"
    )
    assert report.embedded == 40 - committed
    ids = live_paths(small_disk / "c")
    assert len(ids) == 40 == len(Collection.open(small_disk / "c"))
    assert len(np.unique(list(ids.values()))) == 40
    shutil.rmtree(small_disk / "c")


@pytest.mark.slow
def test_a_file_that_never_answers_is_given_up_on(tmp_path: Path, monkeypatch) -> None:
    """A read on a hung mount never returns (the kernel holds the thread: nothing real to plant
    here, so one file's read waits on an event); the run records it and goes on."""
    import lookalike.embedder.pipeline as pipeline

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "hung", "z"):
        photo("coffee").rotate(len(name) * 30).save(folder / f"{name}.png")
    release, real = threading.Event(), pipeline.load_sample

    def hanging(source, *args):
        if source.path.name == "hung.png":
            release.wait(60)
        return real(source, *args)

    monkeypatch.setattr(pipeline, "load_sample", hanging)
    threads = pipeline.ThreadPipeline(batch_size=2, num_threads=2, file_timeout=1)
    try:
        report = embed(folder, tmp_path / "c", pipeline=threads)
    finally:
        release.set()
    assert report.embedded == 2
    assert [Path(f["path"]).name for f in report.failed] == ["hung.png"]
    assert "no answer within 1 s (a hung mount?)" in report.failed[0]["reason"]
