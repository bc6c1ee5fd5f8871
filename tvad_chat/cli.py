"""The `tvad` command line: dispatches to the command modules in tvad_chat.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tvad_chat.errors import TVADError

# Command groups, in the order `tvad --help` lists them.
COMMAND_MODULES = [
    "tvad_chat.commands.info",  # tvad info VIDEO
    "tvad_chat.commands.scene",  # tvad calibrate SOURCE... --out DIR
    "tvad_chat.commands.synth",  # tvad synth ...
    "tvad_chat.commands.eval",  # tvad eval text|frames|objects|pixels|run
    "tvad_chat.commands.corpus",  # tvad build-corpus ...
    "tvad_chat.commands.train",  # tvad train stage0|stage1|stage2
    "tvad_chat.commands.chat",  # tvad app | ask | analyze
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvad", description="T-VAD Chat: talk with a video about what is wrong in it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except TVADError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
