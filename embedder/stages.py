"""A backbone cut into stage groups, input to output: the one definition of its stages. Fine-tuning
freezes, unfreezes and gives learning rates to them; the probe reads their outputs.

The groups are the model's top-level children; while there are fewer than four, the largest
container (``nn.Sequential``, ``nn.ModuleList``: timm's ``blocks``, torchvision's ``features``) is
opened into its children. Parameter-free modules are dropped, and a group holding only
normalisation layers joins the one before it (a stem's BatchNorm belongs to its convolution).
EfficientNet-Lite0 gives 9 groups (stem, 7 block stages, head conv); ResNet-50 gives 5 (stem,
layer1..4); timm's ViTs give the patch embedding and each block (torchvision's keep their
encoder whole: two groups).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from lookalike.errors import InvalidArgument

from .hooks import trace_outputs
from .spec import POOLING_MARK

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
CONTAINERS = (nn.Sequential, nn.ModuleList)
MIN_GROUPS = 4
EXTRA_STAGES = 2  # intermediate stages cached beside the embedding by default (README "Layers")


@dataclass(frozen=True)
class StageGroup:
    """Named modules that train (or stay frozen) together."""

    names: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    own_parameters: tuple[nn.Parameter, ...] = ()  # held by the model itself, not a child

    @property
    def name(self) -> str:
        return "+".join(self.names)

    def parameters(self) -> Iterator[nn.Parameter]:
        yield from self.own_parameters
        for module in self.modules:
            yield from module.parameters()

    def set_trainable(self, trainable: bool) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(trainable)


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _size(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _only_norms(module: nn.Module) -> bool:
    """True when every parameter of `module` belongs to a normalisation layer."""
    owners = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return bool(owners) and all(isinstance(m, NORM_LAYERS) for m in owners)


def _grouped(pieces: list[tuple[str, nn.Module]]) -> list[StageGroup]:
    groups: list[tuple[list[str], list[nn.Module]]] = []
    for name, module in pieces:
        if not _has_parameters(module):
            continue
        if groups and _only_norms(module):
            groups[-1][0].append(name)
            groups[-1][1].append(module)
        else:
            groups.append(([name], [module]))
    return [StageGroup(tuple(names), tuple(modules)) for names, modules in groups]


def stage_groups(model: nn.Module, min_groups: int = MIN_GROUPS) -> list[StageGroup]:
    """The backbone's stage groups, input to output (the classifier must already be removed).

    Start from the model's children; while there are fewer than `min_groups` groups, open the
    largest container into its children. Parameters held by the model itself (a ViT's class token)
    join the first group.
    """
    pieces = list(model.named_children())
    groups = _grouped(pieces)
    while len(groups) < min_groups:
        containers = [
            (_size(module), index)
            for index, (_, module) in enumerate(pieces)
            if isinstance(module, CONTAINERS) and len(module) > 1
        ]
        if not containers:
            break
        _, index = max(containers)
        name, container = pieces[index]
        pieces[index : index + 1] = [(f"{name}.{n}", m) for n, m in container.named_children()]
        groups = _grouped(pieces)
    if not groups:
        raise InvalidArgument(f"{type(model).__name__} has no trainable parameters")
    own = tuple(model.parameters(recurse=False))
    if own:
        first = groups[0]
        groups[0] = StageGroup(first.names, first.modules, own)
    return groups


def stage_outputs(model: nn.Module) -> list[str]:
    """The name of the module whose output ends each stage group, input to output."""
    return [group.names[-1] for group in stage_groups(model)]


def inner_stages(model: nn.Module, image_size: int) -> list[tuple[str, int]]:
    """(name, output rank) of the stages between the stem and the last stage group whose output
    is a spatial map (rank 4) or a token sequence (rank 3), input to output. The last group is
    left out: the embedding already pools it."""
    inner = stage_outputs(model)[1:-1]
    traced = trace_outputs(model, inner, image_size)
    return [(name, len(shape) + 1) for name, (_, shape) in traced.items() if len(shape) in (2, 3)]


def default_stage_layers(model: nn.Module, image_size: int, count: int = EXTRA_STAGES) -> list[str]:
    """The `count` deepest inner stages (`inner_stages`), named with their pooling: GeM for maps
    (the probe's most frequent winner on EfficientNet-Lite0: digits, Fashion-MNIST), avg for
    tokens (GeM would clip their negative values). E.g. ``blocks.5/gem``, ``blocks.6/gem``."""
    stages = inner_stages(model, image_size)[-count:] if count else []
    return [f"{name}{POOLING_MARK}{'gem' if rank == 4 else 'avg'}" for name, rank in stages]
