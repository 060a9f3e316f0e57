"""A bulk embed job (`lookalike embed`) SIGKILLed at a random moment mid-run, then resumed: every
image is embedded exactly once. `bench/reliability_bench.py` kills it more often."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.jobs.bulk import embed_images

from .crash import check_bulk, kill_bulk_runs
from .harness import noise_png

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow


def test_a_bulk_embed_killed_mid_run_resumes_and_embeds_each_image_once(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(48):
        (folder / f"{seed:03d}.png").write_bytes(noise_png(seed, size=40))
    killed, finished = kill_bulk_runs(folder, tmp_path / "c", kills=1, seed=3)
    assert killed >= 1, "every run finished before its kill: nothing was tested"
    embed_images([folder], tmp_path / "c", progress=False, num_workers=0)  # the last resume
    report = check_bulk(folder, tmp_path / "c", killed, finished)
    assert report.embedded_once == report.images == 48, report.lines()
    assert report.twice == 0, report.lines()
