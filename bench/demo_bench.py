"""Demo bench: what the calibrated defaults cost `make demo`, against the demo as it was, one run.

Baseline: the demo's images embedded with the final embedding alone, the classifier trained on
it, no dedup. Ours: the demo as it is (the embedding and two inner stages cached, `--layer auto`,
dedup of the photos at a calibrated threshold). Both on the same images in the same process, the
baseline first (it pays for the first ONNX export; ours re-exports for its own layers). Prints
the seconds of each phase, the totals and their ratio, and what each demo got right.

    python bench/demo_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lookalike.cli.demo import (
    demo_classifier,
    demo_duplicates,
    demo_neighbours,
    write_digits,
    write_photos,
)
from lookalike.jobs.bulk import embed_images


def timed(phases: dict[str, float], name: str, step: Callable):
    started = time.perf_counter()
    result = step()
    phases[name] = time.perf_counter() - started
    return result


def run(workdir: Path, baseline: bool) -> tuple[dict[str, float], list[str]]:
    phases: dict[str, float] = {}
    images = workdir / "images"
    options = {"layers": ["embedding"]} if baseline else None
    folders = [images / "digits", images / "photos"]
    timed(
        phases,
        "embed",
        lambda: embed_images(
            folders, workdir / "collection", options, labels_from_folders=True, progress=False
        ),
    )
    trained, predictions = timed(phases, "train + predict", lambda: demo_classifier(workdir))
    results, _ = timed(phases, "neighbours", lambda: demo_neighbours(workdir))
    digit_hits = results[0][1]
    right = [
        f"CV accuracy {trained.evaluation.accuracy:.3f} (layer {'+'.join(trained.card['layers'])})",
        f"digit 7's neighbours labelled 7: {sum(h.label == '7' for h in digit_hits)} of "
        f"{len(digit_hits)}",
        f"held-out 8 predicted {predictions[0].label}",
    ]
    if not baseline:
        _, clusters = timed(
            phases, "calibrate + dedup", lambda: demo_duplicates(workdir, progress=False)
        )
        right.append(f"planted photo copies found: {len(clusters)} of 3")
    return phases, right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="(the demo is already small)")
    parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for name in ("baseline", "ours"):  # the demo's own layout: images beside the collection
            images = Path(work) / name / "images"
            write_digits(images / "digits", held_out_folder=images / "held-out")
            write_photos(images / "photos")
        base, base_right = run(Path(work) / "baseline", baseline=True)
        ours, ours_right = run(Path(work) / "ours", baseline=False)
    print(f"{'phase':<20} {'baseline s':>10} {'ours s':>8}")
    for phase in {**base, **ours}:
        print(f"{phase:<20} {base.get(phase, 0.0):>10.1f} {ours.get(phase, 0.0):>8.1f}")
    total_base, total_ours = sum(base.values()), sum(ours.values())
    print(f"{'total':<20} {total_base:>10.1f} {total_ours:>8.1f}")
    print(
        f"ours / baseline: {total_ours / total_base:.2f} (extra {total_ours / total_base - 1:+.0%})"
    )
    print("baseline: " + "; ".join(base_right))
    print("ours:     " + "; ".join(ours_right))


if __name__ == "__main__":
    main()
