"""Argument types shared by the command modules: parse a number and check its range (argparse's usage error)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int in ``low..high`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite float above 0."""
    value = _number(text, float)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
