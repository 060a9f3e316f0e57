"""Torch training on labelled images: datasets, stages, one training loop, fine-tuning,
distillation, and the advice on which to run."""
