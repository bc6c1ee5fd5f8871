"""One module per `tvad` command group.

Each module defines `register(subparsers)`, which adds its sub-command(s) and
sets `handler=<function(args) -> int>` as the parser default. Modules import
heavy libraries (torch, transformers, gradio) inside their handlers, so that
`tvad --help` stays fast. arguments.py holds the argument types they share.
"""
