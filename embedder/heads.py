"""Model surgery shared by the registry and the backbone: find and remove a classifier head, load
a checkpoint that may carry a head of another size."""

from __future__ import annotations

import logging

import torch
from torch import nn

from lookalike.errors import InvalidArgument

log = logging.getLogger(__name__)

HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def classifier_name(model: nn.Module) -> str | None:
    """Dotted name of the final classification layer, or None when the model has none.

    timm models say it in their pretrained config; torchvision-style models keep it under one of
    `HEAD_ATTRIBUTES`, as the head itself or as the last Linear (else 1x1 Conv) inside it.
    """
    timm_name = getattr(model, "pretrained_cfg", {}).get("classifier")
    if timm_name and isinstance(_get(model, timm_name), nn.Linear | nn.Conv2d):
        return timm_name
    for attribute in HEAD_ATTRIBUTES:
        head = getattr(model, attribute, None)
        if isinstance(head, nn.Linear | nn.Conv2d):
            return attribute
        if isinstance(head, nn.Module):
            for kind in (nn.Linear, nn.Conv2d):
                inner = [n for n, m in head.named_modules() if n and isinstance(m, kind)]
                if inner:
                    return f"{attribute}.{inner[-1]}"
    return None


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def remove_classifier(model: nn.Module) -> str | None:
    """Replace the classifier with `nn.Identity` (timm: `reset_classifier(0)`); returns what went."""
    name = classifier_name(model)
    if hasattr(model, "reset_classifier") and hasattr(model, "num_features"):
        model.reset_classifier(0)
        return name or "reset_classifier(0)"
    if name is None:
        log.info("%s has no classifier to remove; its output is used as is", type(model).__name__)
        return None
    model.set_submodule(name, nn.Identity())
    return name


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint; a classifier of another size (fine-tuned on other classes) is left out."""
    own = model.state_dict()
    head = classifier_name(model)
    head_keys = {k for k in own if head and k.startswith(f"{head}.")}
    resized = {k for k in head_keys if k in state and state[k].shape != own[k].shape}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in resized}, strict=False
    )
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        raise InvalidArgument(
            f"checkpoint {source} does not fit {type(model).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
