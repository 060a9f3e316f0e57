"""What fine-tuning does with a backbone's stage groups (`embedder.stages`): freeze the lower
ones, unfreeze from the top, give each a learning rate."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lookalike.embedder.stages import StageGroup, stage_groups
from lookalike.errors import InvalidArgument

__all__ = ["StageGroup", "apply_freezing", "layer_rates", "set_train_mode", "stage_groups"]


def trainable_groups(groups: Sequence[StageGroup], unfrozen: int) -> list[bool]:
    """Which groups train when the top `unfrozen` are unfrozen (0: none, len: all)."""
    unfrozen = max(0, min(unfrozen, len(groups)))
    return [index >= len(groups) - unfrozen for index in range(len(groups))]


def apply_freezing(groups: Sequence[StageGroup], unfrozen: int) -> None:
    """requires_grad on the top `unfrozen` groups' parameters, off on the rest."""
    for group, trainable in zip(groups, trainable_groups(groups, unfrozen), strict=True):
        group.set_trainable(trainable)


def set_train_mode(
    model: nn.Module, groups: Sequence[StageGroup], unfrozen: int, freeze_bn: bool = False
) -> None:
    """Train mode where parameters train; frozen groups stay in eval mode, so their BatchNorm
    keeps its pretrained running statistics and dropout stays off. With `freeze_bn`, every
    BatchNorm normalises with its running statistics (its scale and shift still train): small
    batches, or a domain whose batch statistics differ from the pretrained ones."""
    model.train()
    for group, trainable in zip(groups, trainable_groups(groups, unfrozen), strict=True):
        if not trainable:
            for module in group.modules:
                module.eval()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def layer_rates(count: int, top_rate: float, decay: float) -> list[float]:
    """Discriminative learning rates, input to output: the top group gets `top_rate`, each one
    below `decay` times the one above it."""
    if not 0 < decay <= 1:
        raise InvalidArgument(f"the learning-rate decay must be in (0, 1], got {decay}")
    return [top_rate * decay ** (count - 1 - index) for index in range(count)]
