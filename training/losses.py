"""Distillation's losses: on vectors (cosine, MSE), and KL on the teacher's softened logits."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class LossSettings(Protocol):
    """What the loss reads of a run's configuration (`distill.DistillConfig`)."""

    loss: str
    kl_weight: float
    temperature: float


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """1 - cosine, mean squared error, or their sum, averaged over the batch."""
    cosine = (1 - F.cosine_similarity(student, teacher, dim=1)).mean()
    mse = F.mse_loss(student, teacher)
    return {"cosine": cosine, "mse": mse, "cosine+mse": cosine + mse}[kind]


def logit_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened class distributions, times T^2 (Hinton et al.)."""
    return (
        F.kl_div(
            F.log_softmax(student / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    config: LossSettings,
    classifier: nn.Module | None = None,
    center: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """The feature loss (on vectors minus `center`), plus the weighted KL term on `classifier`'s
    logits when asked for."""
    loss = feature_loss(student - center, teacher - center, config.loss)
    if config.kl_weight > 0 and classifier is not None:
        kl = logit_kl(classifier(student), classifier(teacher), config.temperature)
        loss = loss + config.kl_weight * kl
    return loss
