"""A backbone with a new linear head: built to fine-tune, scored, and loaded back from a run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lookalike.embedder.checkpoints import BACKBONE_FILE
from lookalike.embedder.heads import remove_classifier
from lookalike.embedder.registry import create_model
from lookalike.embedder.spec import Preprocess
from lookalike.errors import InvalidArgument

from .images import LabelledImages, eval_transform, loader
from .loop import autocast_for
from .stages import StageGroup, stage_groups

HEAD_FILE = "head.pt"


class ImageClassifier(nn.Module):
    """A headless backbone with a new linear head."""

    def __init__(self, body: nn.Module, width: int, classes: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(width, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(pixels))


def build_classifier(
    backbone: str, weights: str | None, image_size: int | None, classes: int
) -> tuple[ImageClassifier, list[StageGroup], str, Preprocess]:
    """The model to train (`backbone` with a new head of `classes` outputs), its stage groups,
    its registry name and its preprocessing (at `image_size` when given)."""
    loaded = create_model(backbone, weights)
    remove_classifier(loaded.model)
    preprocess = loaded.preprocess
    if image_size:
        preprocess = preprocess.scaled_to(image_size)
    with torch.no_grad():
        loaded.model.eval()
        width = int(loaded.model(torch.zeros(1, 3, preprocess.crop, preprocess.crop)).shape[-1])
    model = ImageClassifier(loaded.model, width, classes)
    return model, stage_groups(loaded.model), loaded.backbone, preprocess


def accuracy(model: nn.Module, batches, device: torch.device) -> tuple[float, int]:
    """Top-1 accuracy over `batches`, and how many images failed to decode."""
    model.eval()
    right = seen = skipped = 0
    with torch.inference_mode(), autocast_for(device):
        for batch in batches:
            skipped += batch.skipped
            if not len(batch.targets):
                continue
            predicted = model(batch.pixels.to(device)).argmax(dim=1).cpu()
            right += int((predicted == batch.targets).sum())
            seen += len(batch.targets)
    return right / max(seen, 1), skipped


def load_finetuned(
    out: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Preprocess, tuple[str, ...]]:
    """The best exported backbone with its head, in eval mode: (model, preprocessing, classes)."""
    from lookalike.embedder.checkpoints import exported_preprocess, read_metadata

    out = Path(out)
    loaded = create_model(str(out / BACKBONE_FILE))
    head_state = torch.load(out / HEAD_FILE, map_location="cpu", weights_only=True)
    weight = head_state["head"]["weight"]
    model = ImageClassifier(loaded.model, weight.shape[1], weight.shape[0])
    model.head.load_state_dict(head_state["head"])
    preprocess = exported_preprocess(read_metadata(out / BACKBONE_FILE))
    return model.to(device).eval(), preprocess, tuple(head_state["classes"])


def evaluate(out: str | Path, images: LabelledImages, batch_size: int = 64) -> float:
    """Top-1 accuracy of a run's best model on `images` (their classes must be the run's)."""
    model, preprocess, classes = load_finetuned(out)
    if tuple(classes) != tuple(images.classes):
        raise InvalidArgument(f"the run's classes {classes} differ from these {images.classes}")
    batches = loader(images, eval_transform(preprocess), batch_size, shuffle=False, seed=0)
    return accuracy(model, batches, torch.device("cpu"))[0]
