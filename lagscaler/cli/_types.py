"""Argument types shared by the commands (a leading underscore keeps this module out of discovery)."""

from __future__ import annotations

import argparse
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
        return value

    return parse
