"""The `tvad` command line: dispatches to the command modules in tvad_chat.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from typing import NoReturn

from tvad_chat.errors import TVADError

logger = logging.getLogger(__name__)

# Command groups, in the order `tvad --help` lists them.
COMMAND_MODULES = [
    "tvad_chat.commands.info",  # tvad info VIDEO
    "tvad_chat.commands.scene",  # tvad calibrate SOURCE... --out DIR
    "tvad_chat.commands.synth",  # tvad synth ...
    "tvad_chat.commands.eval",  # tvad eval text|frames|objects|pixels|run
    "tvad_chat.commands.corpus",  # tvad build-corpus ...
    "tvad_chat.commands.train",  # tvad train stage0|stage1|stage2
    "tvad_chat.commands.chat",  # tvad app | ask | analyze
    "tvad_chat.commands.scan",  # tvad scan ROOT --out DIR
]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit code 2); sub-command parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the arguments)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tvad", description="T-VAD Chat: talk with a video about what is wrong in it.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _quiet_libraries() -> None:
    """No deprecation warnings or weight-loading bars from transformers and the hub between answers (-v shows them)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|huggingface_hub|torch)\b")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        _quiet_libraries()
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except TVADError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a file the user named cannot be read or written
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug of ours: one line, the traceback only with --verbose
        logger.debug("internal error", exc_info=True)
        print(f"error: internal error ({type(err).__name__}); run `tvad -v ...` to see where, and report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
