"""The one training loop and its one precision policy, shared by fine-tuning and distillation.

`autocast_for` is the precision policy (bf16 autocast on CUDA, full precision elsewhere);
`warmup_cosine` the schedule (linear warm-up, then cosine to 0, per step); `update` one optimizer
step; `run_epoch` the pass over an epoch's batches (images that failed to decode are counted and
skipped, progress shown); `save_state` the atomic checkpoint write.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lookalike.durable import atomic_path

from .images import Batch


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """A LambdaLR factor: linear warm-up over `warmup_fraction` of the steps, then cosine to 0."""
    warmup = max(1, round(total_steps * warmup_fraction)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def update(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> float:
    """One optimizer step (and one schedule step) on `loss`; its value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


@dataclass
class EpochTotals:
    """What one pass over the batches added up to."""

    loss: float = 0.0
    right: int = 0
    seen: int = 0
    skipped: int = 0

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.right / max(self.seen, 1)


def run_epoch(
    batches: Iterable[Batch],
    step: Callable[[Batch], tuple[float, int]],
    description: str,
    progress: bool = True,
    show_accuracy: bool = False,
) -> EpochTotals:
    """The one training loop: `step(batch)` trains on a batch and returns (its loss, how many it
    got right); batches of images that all failed to decode are skipped."""
    totals = EpochTotals()
    bar = tqdm(batches, desc=description, unit="batch", disable=not progress, leave=False)
    for batch in bar:
        totals.skipped += batch.skipped
        if not len(batch.targets):
            continue
        loss, right = step(batch)
        totals.loss += loss * len(batch.targets)
        totals.right += right
        totals.seen += len(batch.targets)
        shown = {"loss": f"{totals.mean_loss:.4f}"}
        if show_accuracy:
            shown["acc"] = f"{totals.accuracy:.3f}"
        bar.set_postfix(shown)
    return totals


def save_state(state: dict[str, Any], path: Path) -> None:
    """A checkpoint written atomically (fsynced file and folder)."""
    with atomic_path(path) as partial:
        torch.save(state, partial)
