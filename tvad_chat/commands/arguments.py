"""Argument types shared by the command modules: numbers in a range and output file names (argparse's usage error)."""

from __future__ import annotations

import argparse
import os
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


def output_file(*suffixes: str) -> Callable[[str], str]:
    """An argparse type: a file to write, with one of ``suffixes`` (lower case, with the dot), not a folder."""

    def parse(text: str) -> str:
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text} is a folder: give a file name ending in {' or '.join(suffixes)}")
        if not text.lower().endswith(suffixes):
            raise argparse.ArgumentTypeError(f"{text!r} must end in {' or '.join(suffixes)}")
        return text

    return parse
