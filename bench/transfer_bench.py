"""Transfer report: Fashion-MNIST with the offline default (pretrained) vs random init vs raw pixels.

Same split, same probe (lookalike's default logistic-regression pipeline), one run. Features are
cached in collections under --workdir (resumable), written through the product's own bulk embedder.
Also measures training from the cache against re-embedding the same images.

    python bench/transfer_bench.py --quick      # 1k train / 1k test, about two minutes
    python bench/transfer_bench.py              # 1k, 10k, 60k train / the standard 10k test
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import accuracy_score

from lookalike.classify import make_model
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
)  # fmt: skip
LAYERS = ("blocks.4", "blocks.5", "blocks.6", "embedding")
STAGES_OF = ("blocks.4", "blocks.5", "blocks.6")
STAGES = "blocks.4+5+6"
EMBEDDERS = {"pretrained": "default", "random-init": None}


def fashion_mnist_missing(folder: Path) -> bool:
    """True (and says why the bench skips) when Debian's Fashion-MNIST is not in `folder`."""
    if (folder / "train-images-idx3-ubyte.gz").exists():
        return False
    print(f"SKIPPED: Fashion-MNIST not found in {folder} (apt install dataset-fashion-mnist)")
    return True


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder: Path) -> dict[str, np.ndarray]:
    names = {
        "train_x": "train-images-idx3-ubyte.gz",
        "train_y": "train-labels-idx1-ubyte.gz",
        "test_x": "t10k-images-idx3-ubyte.gz",
        "test_y": "t10k-labels-idx1-ubyte.gz",
    }
    return {key: read_idx(folder / name) for key, name in names.items()}


def nested_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A permutation whose every prefix is class-balanced, so 1k is inside 10k is inside 60k."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    rank = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        members = shuffled[labels[shuffled] == label]
        rank[members] = np.arange(len(members))
    return shuffled[np.lexsort((rng.random(len(labels)), rank[shuffled]))]


def write_pngs(images: np.ndarray, labels: np.ndarray, rows: np.ndarray, root: Path) -> list[Path]:
    paths = []
    for row in rows:
        path = root / CLASSES[labels[row]] / f"{row:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[row]).save(path)
        paths.append(path)
    return paths


def features(collection: Collection, layer: str, paths: list[Path]) -> np.ndarray:
    items = collection.items(["id", "path"])
    id_of = dict(zip(items["path"].to_pylist(), items["id"].to_pylist(), strict=True))
    return collection.vectors([id_of[str(p.resolve())] for p in paths], layer)


def probe(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray):
    model = make_model("logreg", len(train_y), int(np.bincount(train_y).min()))
    started = time.perf_counter()
    model.fit(train, train_y)
    seconds = time.perf_counter() - started
    return float(accuracy_score(test_y, model.predict(test))), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--workdir", type=Path, default=Path("bench-data/transfer"))
    parser.add_argument("--data", type=Path, default=FASHION_MNIST)
    args = parser.parse_args()
    if fashion_mnist_missing(args.data):
        return 0
    data = load(args.data)
    sizes = (500, 1000) if args.quick else (1000, 10000, 60000)
    n_test, n_val = (1000, 500) if args.quick else (10000, 5000)
    order = nested_order(data["train_y"])
    val_rows = order[-n_val:]
    select_size = sizes[-2]  # the layer is chosen on validation at this size, then used at all
    work = args.workdir / ("quick" if args.quick else "full")
    train_rows = order[: max(sizes)] if max(sizes) < len(order) else order
    train_paths = write_pngs(data["train_x"], data["train_y"], train_rows, work / "images/train")
    val_paths = write_pngs(data["train_x"], data["train_y"], val_rows, work / "images/train")
    test_rows = np.arange(n_test)
    test_paths = write_pngs(data["test_x"], data["test_y"], test_rows, work / "images/test")
    train_y, val_y, test_y = data["train_y"][train_rows], data["train_y"][val_rows], data["test_y"]
    test_y = test_y[test_rows]
    print(
        f"Fashion-MNIST: train sizes {sizes}, {n_test} test images (standard test set), "
        f"{n_val} validation images (from train) to pick the layer; {args.image_size} px"
    )

    results: dict[str, dict] = {}
    collections = {}
    for kind, weights in EMBEDDERS.items():
        embedder = {"weights": weights, "layers": LAYERS, "image_size": args.image_size}
        report = embed_images(
            [work / "images/train", work / "images/test"], work / kind, embedder,
            labels_from_folders=True, batch_size=16,
        )  # fmt: skip
        print(f"{kind}: {report.summary()}")
        collections[kind] = Collection.open(work / kind)

    def pick(name, train_of, val, test) -> dict:
        """Validation accuracy of each layer at `select_size`, then the best one at every size."""
        layers = {}
        for layer, train in train_of.items():
            accuracy, _ = probe(train[:select_size], train_y[:select_size], val[layer], val_y)
            layers[layer] = accuracy
        best = max(layers, key=layers.get)
        by_size = {}
        for size in sizes:
            accuracy, seconds = probe(train_of[best][:size], train_y[:size], test[best], test_y)
            by_size[size] = {"accuracy": round(accuracy, 4), "fit_seconds": round(seconds, 2)}
            print(
                f"  {name:<12} {best:<10} train {size:>6}: test accuracy {accuracy:.4f} ({seconds:.1f} s fit)"
            )
        return {"validation": layers, "best_layer": best, "test": by_size}

    print("\nper-layer validation accuracy (chooses the layer), then test accuracy by train size")
    for kind, collection in collections.items():
        train_of = {layer: features(collection, layer, train_paths) for layer in LAYERS}
        val = {layer: features(collection, layer, val_paths) for layer in LAYERS}
        test = {layer: features(collection, layer, test_paths) for layer in LAYERS}
        results[kind] = pick(kind, train_of, val, test)
        print(
            f"  {kind} validation: "
            + ", ".join(f"{k} {v:.4f}" for k, v in results[kind]["validation"].items())
        )
        # the stages side by side (`lookalike train --layer A --layer B ...`), same probe
        results[f"{kind}-stages"] = pick(
            f"{kind}-stages",
            *({STAGES: np.hstack([part[s] for s in STAGES_OF])} for part in (train_of, val, test)),
        )
    pixels = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255  # noqa: E731
    results["pixels"] = pick(
        "pixels",
        {"pixels": pixels(data["train_x"][train_rows])},
        {"pixels": pixels(data["train_x"][val_rows])},
        {"pixels": pixels(data["test_x"][test_rows])},
    )

    print("\naccuracy on the test set by training-set size (baseline: raw pixels, same probe)")
    print(f"{'features':<20} {'layer':<13} " + " ".join(f"{s:>8}" for s in sizes))
    for kind, result in results.items():
        row = " ".join(f"{result['test'][s]['accuracy']:>8.4f}" for s in sizes)
        print(f"{kind:<20} {result['best_layer']:<13} {row}")
    for size in sizes:
        ours, pixel, random = (
            results[k]["test"][size]["accuracy"] for k in ("pretrained", "pixels", "random-init")
        )
        print(
            f"train {size:>6}: pretrained - pixels = {ours - pixel:+.4f}, pretrained - random init = {ours - random:+.4f}"
        )

    ratio_size = sizes[-1] if args.quick else sizes[1]  # re-embedding 60k would take 20 min more
    results["cache_vs_reembed"] = cache_ratio(
        collections["pretrained"], train_paths[:ratio_size], train_y[:ratio_size],
        results["pretrained"]["best_layer"], work, args.image_size,
    )  # fmt: skip
    (work / "transfer.json").write_text(json.dumps(results, indent=2, default=str))
    chart(results, sizes, work / "transfer.png")
    print(f"results: {work / 'transfer.json'}, chart: {work / 'transfer.png'}")
    return 0


def cache_ratio(collection, paths, labels, layer, work: Path, image_size: int) -> dict:
    """Train from the cache (read the vectors by id + fit, as `lookalike train` does) vs embed
    the same images again (same embedder, same image size)."""
    scratch = work / "reembed"
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.perf_counter()
    embed_images(
        paths,
        scratch,
        {"layers": (layer,), "image_size": image_size},
        batch_size=16,
        progress=False,
    )
    embed_seconds = time.perf_counter() - started
    items = collection.items(["id", "path"])  # resolving labels to ids: not timed
    id_of = dict(zip(items["path"].to_pylist(), items["id"].to_pylist(), strict=True))
    ids = [id_of[str(p.resolve())] for p in paths]
    started = time.perf_counter()
    cached = collection.vectors(ids, layer)
    model = make_model("logreg", len(labels), int(np.bincount(labels).min()))
    model.fit(cached, labels)
    train_seconds = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    ratio = embed_seconds / train_seconds
    print(
        f"\n{len(paths)} images: re-embedding {embed_seconds:.1f} s (baseline), training from the "
        f"cache {train_seconds:.2f} s (read + fit): {ratio:.0f}x faster"
    )
    return {
        "images": len(paths),
        "embed_seconds": embed_seconds,
        "train_seconds": train_seconds,
        "ratio": ratio,
    }


def chart(results: dict, sizes, out: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for kind in ("pretrained", "pretrained-stages", "random-init", "pixels"):
        accuracy = [results[kind]["test"][s]["accuracy"] for s in sizes]
        axes.plot(sizes, accuracy, marker="o", label=f"{kind} ({results[kind]['best_layer']})")
    axes.set_xscale("log")
    axes.set_xlabel("training images")
    axes.set_ylabel("test accuracy")
    axes.set_title("Fashion-MNIST linear probe")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(out, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
