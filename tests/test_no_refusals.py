"""No needless refusals: search and dedup right after `embed` (no `index build` or `update`
first), and an `embed` that achieved nothing exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import photo, write_bad_files

from lookalike.cli import main

TINY_OPTIONS = ["--backbone", "resnet18", "--weights", "none", "--image-size", "64", "-q"]


def run(*args: object) -> tuple[int, str]:
    answer = CliRunner().invoke(main, [str(a) for a in args])
    return answer.exit_code, answer.output


@pytest.mark.slow
def test_search_and_dedup_catch_the_index_up_themselves(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        photo(name).save(folder / f"{name}.png")
    collection = tmp_path / "c"
    assert run("embed", folder, "-c", collection, *TINY_OPTIONS)[0] == 0
    code, output = run("search", "-c", collection, folder / "coffee.png", "-k", "1", "--json")
    assert code == 0, output  # no index yet: it is built
    assert json.loads(output.splitlines()[0])["hits"][0]["path"] == str(folder / "coffee.png")

    photo("rocket").save(folder / "rocket.png")  # embedded after the index was saved
    assert run("embed", folder, "-c", collection, "-q")[0] == 0
    code, output = run("search", "-c", collection, folder / "rocket.png", "-k", "1", "--json")
    assert code == 0, output  # the saved index is caught up, not refused
    assert json.loads(output.splitlines()[0])["hits"][0]["path"] == str(folder / "rocket.png")
    code, output = run("dedup", "-c", collection, "--threshold", "0.0001", "-q")
    assert code == 0 and "0 pairs within" in output, output


@pytest.mark.slow
def test_an_embed_that_achieved_nothing_exits_non_zero(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here\n")
    code, output = run("embed", empty, "-c", tmp_path / "c", *TINY_OPTIONS)
    assert code == 1 and "no image found" in output, output

    bad = tmp_path / "bad"
    write_bad_files(bad)
    code, output = run("embed", bad, "-c", tmp_path / "c", *TINY_OPTIONS)
    assert code == 1 and "every one of the 6 files tried failed" in output, output
    code, output = run(
        "embed", bad, "-c", tmp_path / "c", "-q"
    )  # known-bad, skipped: not a failure
    assert code == 0 and "6 skipped as known-bad" in output, output
