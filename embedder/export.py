"""Choose a backbone's engine: torch eager, or its ONNX export run by ONNX Runtime on the CPU.

On a CPU, ONNX Runtime runs the offline default about twice as fast as torch eager (bench/
embed_bench.py), so ``engine="auto"`` uses it wherever the backbone exports. The export holds the
pooled (and L2-normalised) vector of every spec layer as one output each (hooked layers included),
so only vectors leave the graph. It is cached as ``<spec fingerprint>.onnx`` (next to a collection,
or in the user cache) and tagged with that fingerprint. Each time an engine is opened its vectors
are compared with torch's on real photos; below `MIN_COSINE` on any layer the file is rebuilt once,
then the engine is refused: ``auto`` falls back to torch with the reason logged, ``onnx`` raises.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lookalike.durable import atomic_path, disk_errors, write_atomic
from lookalike.errors import InvalidArgument, StorageFull, StorageReadOnly

from .backbone import Backbone
from .engines import (
    CHECK_PHOTOS,
    ENGINES,
    FINGERPRINT_KEY,
    INPUT_NAME,
    MIN_COSINE,
    OPSET,
    EngineRefused,
    OnnxEngine,
    engine_dirs,
    min_cosines,
)
from .preprocess import to_batch

log = logging.getLogger(__name__)


class ExportedVectors(nn.Module):
    """What the ONNX graph computes: the backbone's vectors as a tuple in spec layer order."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.model = backbone.model
        self.layers = backbone.spec.layers
        self._backbone = backbone

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vectors = self._backbone.traceable_vectors(pixels)
        return tuple(vectors[layer] for layer in self.layers)


def export_onnx(backbone: Backbone, path: Path) -> None:
    """Export `backbone`'s vectors (dynamic batch) to `path`, atomically, tagged with its spec."""
    import onnx

    size = backbone.spec.preprocess.crop
    example = torch.zeros(2, 3, size, size)
    outputs = [f"vector{number}" for number in range(len(backbone.spec.layers))]
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch_dir = tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-")
    with scratch_dir as scratch:
        traced = Path(scratch) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                ExportedVectors(backbone).eval(),
                (example,),
                str(traced),
                dynamo=False,  # seconds, not the dynamo exporter's tens of seconds; same graph speed
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
            )
        model = onnx.load(str(traced))
    onnx.helper.set_model_props(model, {FINGERPRINT_KEY: backbone.spec.fingerprint()})
    write_atomic(path, model.SerializeToString())


def check_pixels(backbone: Backbone) -> torch.Tensor:
    """Real photos, preprocessed for `backbone`: what an engine is checked on."""
    import skimage.data
    from PIL import Image

    photos = [Image.fromarray(getattr(skimage.data, name)()) for name in CHECK_PHOTOS]
    return to_batch([photo.convert("RGB") for photo in photos], backbone.spec.preprocess)


def _checked(
    backbone: Backbone,
    path: Path,
    reference: dict[str, np.ndarray],
    pixels: torch.Tensor,
    min_cosine: float,
    threads: int | None = None,
) -> OnnxEngine:
    """Open the engine at `path`, or raise `EngineRefused` saying why it cannot stand in for torch."""
    try:
        engine = OnnxEngine(path, backbone.spec.layers, threads)
        if engine.fingerprint != backbone.spec.fingerprint():
            raise EngineRefused(f"{path} was exported for spec {engine.fingerprint}")
        found = engine.run(pixels.numpy())
    except EngineRefused:
        raise
    except Exception as error:  # onnxruntime raises its own (Fail, InvalidGraph, ...) on bad files
        raise EngineRefused(f"{path} does not load or run: {error}") from error
    cosines = min_cosines(reference, found)
    drifted = {layer: round(c, 6) for layer, c in cosines.items() if c < min_cosine}
    if drifted:
        raise EngineRefused(
            f"{path} drifts from torch on real photos: min cosine {drifted} < {min_cosine}"
        )
    return engine


def open_onnx_engine(
    backbone: Backbone,
    cache_dirs: Sequence[Path],
    min_cosine: float = MIN_COSINE,
    threads: int | None = None,
) -> OnnxEngine:
    """The checked ONNX engine for `backbone`: a cached export, else a fresh one.

    The first of `cache_dirs` that holds a file passing the check is used, and the file is shared
    (hard-linked, else copied) into the others, so that one export serves every collection of a
    spec. Raises `EngineRefused` when onnxruntime is missing, the export fails, or a fresh export
    still drifts from torch. `threads`: ONNX Runtime's intra-op threads (default: every core
    this process may use).
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise EngineRefused(f"onnxruntime is not installed ({error})") from error
    paths = [folder / f"{backbone.spec.fingerprint()}.onnx" for folder in cache_dirs]
    pixels = check_pixels(backbone)
    reference = backbone.embed(pixels)
    refused: list[Path] = []
    for path in filter(Path.is_file, paths):
        try:
            engine = _checked(backbone, path, reference, pixels, min_cosine, threads)
        except EngineRefused as error:
            log.warning("cached engine refused, exporting again: %s", error)
            refused.append(path)
            continue
        _share(path, [p for p in paths if p in refused or not p.is_file()])
        return engine
    path = _export_somewhere(backbone, paths)
    engine = _checked(backbone, path, reference, pixels, min_cosine, threads)
    _share(path, [p for p in paths if p != path and (p in refused or not p.is_file())])
    return engine


def _export_somewhere(backbone: Backbone, paths: Sequence[Path]) -> Path:
    """Export to the first writable of `paths`; the export error itself is not retried."""
    for path in paths:
        started = time.perf_counter()
        try:
            export_onnx(backbone, path)
        except (StorageReadOnly, StorageFull) as error:
            log.info("cannot write an engine to %s (%s); trying the next place", path, error)
            continue
        except Exception as error:  # the exporter raises many kinds: unsupported ops, tracing
            raise EngineRefused(
                f"{backbone.spec.backbone} does not export to ONNX: {error}"
            ) from error
        log.info(
            "exported %s to %s in %.1f s",
            backbone.spec.backbone,
            path,
            time.perf_counter() - started,
        )
        return path
    raise EngineRefused(f"no writable place for the engine among {[str(p) for p in paths]}")


def _share(source: Path, targets: Sequence[Path]) -> None:
    """Put `source` at each of `targets`, atomically (a hard link, else a copy); best effort."""
    for target in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as temporary:
                try:
                    os.link(source, temporary)
                except OSError:
                    shutil.copyfile(source, temporary)
        except (OSError, StorageFull) as error:
            log.info("cannot share the engine at %s: %s", target, error)


def use_engine(
    backbone: Backbone,
    engine: str = "auto",
    collection_dir: str | Path | None = None,
    min_cosine: float = MIN_COSINE,
    threads: int | None = None,
) -> Backbone:
    """Run `backbone` on `engine` (auto, onnx, torch); returns it.

    ``auto`` means ONNX Runtime on the CPU when the backbone exports and passes the check, else
    torch (on a GPU, always torch). ``onnx`` raises `EngineRefused` where ``auto`` falls back.
    """
    if engine not in ENGINES:
        raise InvalidArgument(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    backbone.engine = None
    if engine == "torch":
        return backbone
    if backbone.device.type != "cpu":
        if engine == "onnx":
            raise InvalidArgument(f"the onnx engine runs on the CPU, not {backbone.device}")
        return backbone
    try:
        found = open_onnx_engine(backbone, engine_dirs(collection_dir), min_cosine, threads)
    except EngineRefused as error:
        if engine == "onnx":
            raise
        log.warning("ONNX Runtime engine refused, embedding with torch: %s", error)
        return backbone
    backbone.engine = found
    return backbone
