"""Options shared by the command modules: numbers in a range and output file names (argparse's usage error), and
where a command's tasks run (--workers, --ray)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from tvad_chat.executor import Executor, open_executor


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


def executor_options(parser: argparse.ArgumentParser, unit: str, default: str) -> None:
    """``--workers N`` and ``--ray ADDRESS|auto``: where the command's tasks (one per ``unit``) run
    (tvad_chat.executor.open_executor). ``default`` says what runs without them."""
    parser.add_argument("--workers", type=whole_number(1), default=None, metavar="N",
                        help=f"local worker processes, one {unit} each at a time (default: {default}); with --ray, "
                             "at most 2N tasks queued on the cluster (default N: its CPUs)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS|auto",
                        help=f"run one task per {unit} on a Ray cluster: the head's address (host:6379, as "
                             "`ray start --head` prints it) or auto for the cluster this machine has joined")


def open_chosen_executor(args: argparse.Namespace) -> Executor | None:
    """The executor that ``--workers``/``--ray`` ask for, or None (this process) when neither is given."""
    if args.workers is None and args.ray is None:
        return None
    return open_executor(args.workers, args.ray)


def stage_options(parser: argparse.ArgumentParser) -> None:
    """``--sam2`` and ``--clip``: weights for the optional stages (tvad_chat.stages); without them the weight-free
    defaults (masks: the heat outline; no categories)."""
    parser.add_argument("--sam2", default=None, metavar="ID_OR_PATH",
                        help="SAM2 weights for object masks of the anomalous tracks, propagated through the clip: a "
                             "published id (facebook/sam2.1-hiera-tiny ...) in the hub cache, or a local "
                             "sam2.1_hiera_*.pt (default: the heat outline)")
    parser.add_argument("--clip", default=None, metavar="ID_OR_PATH",
                        help="open_clip weights that rank anomaly categories (prompts/categories.yaml and --events) "
                             "for each event: a hub id in the hub cache, or a folder with open_clip_config.json and "
                             "its weights (default: no categories)")
