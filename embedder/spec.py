"""The embedder spec: everything needed to reproduce (and compare) a set of embeddings."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lookalike.errors import InvalidArgument, SpecMismatch

POOLINGS = ("avg", "max", "gem", "cls", "grid")  # grid: a 3 x 3 layout (see hooks.grid_pool)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # autocast on a GPU: auto is bf16 where supported
OUTPUT_LAYER = "embedding"  # the model's own output once its classifier is replaced by Identity
POOLING_MARK = "/"  # ``blocks.5/gem``: a layer with its own pooling (the probe's key)


def split_layer(layer: str, default_pooling: str) -> tuple[str, str]:
    """(module name, pooling) of a spec layer: ``blocks.5/gem`` is ``blocks.5`` GeM-pooled; a bare
    name takes the spec's one `default_pooling`."""
    module, mark, pooling = layer.partition(POOLING_MARK)
    if not mark:
        return layer, default_pooling
    if pooling not in POOLINGS or not module:
        raise InvalidArgument(
            f"bad layer {layer!r}: write MODULE or MODULE{POOLING_MARK}POOLING with a pooling "
            f"of {', '.join(POOLINGS)}"
        )
    return module, pooling


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, scale to [0, 1], normalise: what the weights were trained with."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def scaled_to(self, crop: int) -> Preprocess:
        """The same recipe at another input size, keeping the resize/crop ratio."""
        resize = round(crop * self.resize / self.crop)
        return dataclasses.replace(self, resize=resize, crop=crop)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
        )


@dataclass(frozen=True)
class BackboneSpec:
    """What a collection, index or classifier records about the embedder that made its vectors.

    Two artefacts can be mixed only when their `fingerprint()`s are equal.
    """

    backbone: str
    weights: str | None
    layers: tuple[str, ...]
    pooling: str
    normalize: bool
    dims: dict[str, int] = field(hash=False)
    preprocess: Preprocess = field(hash=False)
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers)
        data["preprocess"]["mean"] = list(self.preprocess.mean)
        data["preprocess"]["std"] = list(self.preprocess.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        return cls(
            backbone=data["backbone"],
            weights=data.get("weights"),
            layers=tuple(data["layers"]),
            pooling=data["pooling"],
            normalize=bool(data["normalize"]),
            dims={str(k): int(v) for k, v in data["dims"].items()},
            preprocess=Preprocess.from_dict(data["preprocess"]),
            dtype=data.get("dtype", "float32"),
        )

    def split(self, layer: str) -> tuple[str, str]:
        """(module name, pooling) of one of the spec's layers (see `split_layer`)."""
        return split_layer(layer, self.pooling)

    def fingerprint(self) -> str:
        """A short stable hash of the whole spec."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def check_same(
        self,
        other: BackboneSpec | Mapping[str, Any] | str | None,
        what: str,
        reference: str,
        fix: str,
    ) -> None:
        """Raise `SpecMismatch` unless `other` (an artefact's spec, as a spec, its dict or its
        fingerprint; None: it records none) is this spec. The one spec check, with one message:
        "{what} comes from another embedder spec than {reference} (field: its != this; ...); {fix}"."""
        differences = self._differences_from(other)
        if differences:
            raise SpecMismatch(
                f"{what} comes from another embedder spec than {reference} "
                f"({'; '.join(differences)}); {fix}"
            )

    def _differences_from(self, other: BackboneSpec | Mapping[str, Any] | str | None) -> list[str]:
        """`other.differences(self)` for whatever form `other` comes in."""
        if not other:
            return ["it records no embedder spec"]
        if isinstance(other, str):
            mine = self.fingerprint()
            return [] if other == mine else [f"fingerprint: {other!r} != {mine!r}"]
        if not isinstance(other, BackboneSpec):
            try:
                other = BackboneSpec.from_dict(dict(other))
            except (KeyError, TypeError, ValueError, AttributeError):
                return ["its recorded embedder spec is unreadable"]
        if other.fingerprint() == self.fingerprint():
            return []
        return other.differences(self) or [
            f"fingerprint: {other.fingerprint()!r} != {self.fingerprint()!r}"
        ]

    def differences(self, other: BackboneSpec) -> list[str]:
        """Human-readable `field: ours != theirs` lines, empty when the specs match."""
        ours, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: {ours[key]!r} != {theirs[key]!r}"
            for key in ours
            if ours[key] != theirs.get(key)
        ]
