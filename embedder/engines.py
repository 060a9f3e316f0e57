"""The ONNX Runtime engine: a backbone's export (one output per spec layer) in a CPU session,
where its export files are kept, and how two engines' vectors are compared. Exporting, checking
and choosing an engine: `export`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lookalike.errors import LookalikeError

from .pipeline import cpu_cores

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnx", "torch")
MIN_COSINE = 0.999
CHECK_PHOTOS = ("chelsea", "coffee", "astronaut")  # scikit-image's, shipped with the package
OPSET = 17
INPUT_NAME = "pixels"
FINGERPRINT_KEY = "lookalike.spec_fingerprint"
# Off: ONNX Runtime's idle workers otherwise spin, and burn the core a decode thread needs
# (measured on 2 cores, batch 8: 28 CPU-ms per image spinning, 20 without, same wall time alone).
SPINNING = False


class EngineRefused(LookalikeError):
    """The ONNX engine cannot serve this backbone: no runtime, a failed export or a failed check."""


class OnnxEngine:
    """An exported backbone in an ONNX Runtime session: pixels in, one vector per spec layer out.

    Intra-op threads default to the cores this process may use; nodes run sequentially; idle
    threads sleep rather than spin (see `SPINNING`).
    """

    def __init__(
        self,
        path: Path,
        layers: Sequence[str],
        threads: int | None = None,
        spinning: bool = SPINNING,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        self.layers = tuple(layers)
        outputs = len(self.session.get_outputs())
        if outputs != len(self.layers):
            raise EngineRefused(f"{path} has {outputs} outputs for {len(self.layers)} layers")

    @property
    def fingerprint(self) -> str | None:
        """The spec fingerprint the file was exported for."""
        return self.session.get_modelmeta().custom_metadata_map.get(FINGERPRINT_KEY)

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 3, H, W) float32 preprocessed pixels to float32 (B, dim) vectors by layer."""
        feed = {INPUT_NAME: np.ascontiguousarray(pixels, dtype=np.float32)}
        return dict(zip(self.layers, self.session.run(None, feed), strict=True))


def user_cache_dir() -> Path:
    """``$LOOKALIKE_CACHE``, else ``$XDG_CACHE_HOME/lookalike``, else ``~/.cache/lookalike``."""
    if os.environ.get("LOOKALIKE_CACHE"):
        return Path(os.environ["LOOKALIKE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike"


def engine_dirs(collection_dir: str | Path | None) -> list[Path]:
    """Where a backbone's export is looked for and written, in order: next to the collection first."""
    fallback = user_cache_dir() / "engines"
    return [Path(collection_dir) / "engines", fallback] if collection_dir else [fallback]


def min_cosines(expected: dict[str, np.ndarray], found: dict[str, np.ndarray]) -> dict[str, float]:
    """The lowest cosine similarity between matching rows, by layer (two zero rows count as 1)."""
    lowest = {}
    for layer, xa in expected.items():
        xb = found[layer]
        if xb.shape != xa.shape:
            lowest[layer] = -1.0
            continue
        norms = np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1)
        dots = np.einsum("ij,ij->i", xa, xb)
        cosines = np.where(norms > 1e-12, dots / np.maximum(norms, 1e-30), 1.0)
        lowest[layer] = float(cosines.min())
    return lowest
