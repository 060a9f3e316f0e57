"""Ranges of the numeric training parameters, checked in one place.

The library checks them (`check_range`, `check_ranges`), raising `InvalidArgument` with the
parameter's name; the CLI hands the same `Range`s to click (`cli_options.ranged`), so a bad option
is refused before anything is loaded. Kept free of torch and scikit-learn: the CLI imports it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

from lookalike.errors import InvalidArgument


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric parameter: None is unbounded; an open bound excludes its own value."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """'> 0', '>= 1', 'in (0, 1)', 'in [0, 1)', ..."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return "a finite number"

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def check(self, name: str, value: object) -> None:
        """Raise `InvalidArgument` naming `name` unless `value` is a finite number in range."""
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            wanted = "an integer" if self.integer else "a number"
            raise InvalidArgument(f"{name} must be {wanted}, got {value!r}")
        if not math.isfinite(value) or not self.contains(value):
            raise InvalidArgument(f"{name} must be {self.describe()}, got {value!r}")


def check_range(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """`Range(low, high, ...).check(name, value)`: e.g. 'lr must be > 0, got -1.0'."""
    Range(low, high, low_open, high_open, integer).check(name, value)


def check_ranges(values: Mapping[str, object], ranges: Mapping[str, Range]) -> None:
    """Check each named value that is given; None stands for a parameter's default."""
    for name, bound in ranges.items():
        if values.get(name) is not None:
            bound.check(name, values[name])


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, low_open=True, high_open=True)  # a held-out share: neither none nor all
AT_LEAST_ONE = Range(1, integer=True)
COUNT = Range(0, integer=True)
SEED = Range(0, 2**32 - 1, integer=True)  # what NumPy, torch and scikit-learn all take
FOLDS = Range(2, integer=True)

TRAIN = {"folds": FOLDS, "holdout": FRACTION, "seed": SEED}
PROBE = {"folds": FOLDS, "sample": AT_LEAST_ONE, "seed": SEED}
ADVISE = {"image_size": AT_LEAST_ONE, "sample": AT_LEAST_ONE, "seed": SEED}
PREDICT = {"k": COUNT}  # 0: no neighbours

_TRAINING = {
    "epochs": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_fraction": Range(0, 1, high_open=True),  # 0: no warm-up
    "seed": SEED,
    "workers": COUNT,
}
FINETUNE = {
    **_TRAINING,
    "unfreeze": COUNT,
    "backbone_lr": POSITIVE,
    "lr_decay": Range(0, 1, low_open=True),  # each group below trains no faster than the one above
    "label_smoothing": Range(0, 1, high_open=True),
    "image_size": AT_LEAST_ONE,
    "val_fraction": FRACTION,
    "patience": AT_LEAST_ONE,  # 0 would stop before the first epoch
}
DISTILL = {
    **_TRAINING,
    "teacher_image_size": AT_LEAST_ONE,
    "student_image_size": AT_LEAST_ONE,
    "kl_weight": NON_NEGATIVE,
    "temperature": POSITIVE,
    "holdout": FRACTION,
    "k": AT_LEAST_ONE,
    "speed_batch_size": AT_LEAST_ONE,
}
