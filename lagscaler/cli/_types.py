"""Argument types shared by the commands (a leading underscore keeps this module out of discovery)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def positive(kind: type[T]) -> Callable[[str], T]:
    """An argparse ``type=`` accepting numbers > 0 of ``kind``, with a one-line error otherwise."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        if not math.isfinite(value):  # ``--watch inf`` would print one sample and then hang
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        return value

    return parse
