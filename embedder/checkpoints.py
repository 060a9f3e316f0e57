"""Exported backbones: a fine-tuned or distilled model saved as one safetensors file the registry builds.

The file holds the model's weights (its classifier already removed), optionally a linear
``projection`` applied after the model's output (a distilled student mapped into its teacher's
space), and metadata: the registry name of the architecture, the preprocessing it was trained with,
and free-form training facts. ``lookalike embed --backbone FILE`` (or the folder holding
``backbone.safetensors``) builds it; its spec's weights id carries the file's hash, so embeddings of
the base model and of each fine-tuned version are never mixed in one index.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lookalike.durable import atomic_path
from lookalike.errors import InvalidArgument

from .spec import Preprocess

FORMAT = "lookalike-backbone/1"
BACKBONE_FILE = "backbone.safetensors"
PROJECTION = "lookalike_projection"


class ProjectedModel(nn.Module):
    """A headless model followed by a linear map (a distilled student speaking its teacher's space)."""

    def __init__(self, body: nn.Module, projection: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.projection = projection

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.body(images))


def save_backbone(
    path: str | Path,
    model: nn.Module,
    backbone: str,
    preprocess: Preprocess,
    projection: nn.Linear | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (headless) as an exported backbone, atomically (temp file, fsync, rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {  # own, contiguous copies: safetensors refuses shared or strided (channels_last) ones
        name: tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
        for name, tensor in model.state_dict().items()
    }
    if projection is not None:
        state[f"{PROJECTION}.weight"] = projection.weight.detach().cpu().clone()
        state[f"{PROJECTION}.bias"] = projection.bias.detach().cpu().clone()
    metadata = {
        "format": FORMAT,
        "backbone": backbone,
        "preprocess": json.dumps(dataclasses.asdict(preprocess)),
        "info": json.dumps(info or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        save_file(state, str(partial), metadata=metadata)
        # safetensors creates its files owner-only; a backbone is shared like any weights file
        partial.chmod(0o644)
    return path


def exported_backbone_path(name: str | Path) -> Path | None:
    """The exported-backbone file that `name` points at (the file or its folder), else None."""
    path = Path(name).expanduser()
    if path.is_dir() and (path / BACKBONE_FILE).is_file():
        path = path / BACKBONE_FILE
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    return path.resolve() if read_metadata(path).get("format") == FORMAT else None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header's metadata (empty when the file has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own SafetensorError for a bad header
        raise InvalidArgument(f"{path} is not a readable safetensors file: {error}") from error


def exported_preprocess(metadata: dict[str, str]) -> Preprocess:
    return Preprocess.from_dict(json.loads(metadata["preprocess"]))


def exported_info(path: str | Path) -> dict[str, Any]:
    """The training facts recorded with an exported backbone."""
    return json.loads(read_metadata(path).get("info", "{}"))


def split_projection(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], nn.Linear | None]:
    """The model's own weights, and the projection saved beside them (if any)."""
    weight = state.pop(f"{PROJECTION}.weight", None)
    bias = state.pop(f"{PROJECTION}.bias", None)
    if weight is None:
        return state, None
    projection = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        projection.weight.copy_(weight)
        if bias is not None:
            projection.bias.copy_(bias)
    return state, projection
