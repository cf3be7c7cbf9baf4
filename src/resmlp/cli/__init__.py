"""The `resmlp` command: one sub-command per module in SUBCOMMANDS, each with `register(subparsers)`.

User mistakes (ValueError and its subclasses, missing files) end with one line on stderr and exit code
2; set RESMLP_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

SUBCOMMANDS = ("resmlp.cli.models", "resmlp.cli.train", "resmlp.cli.analyze", "resmlp.cli.deploy", "resmlp.cli.text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resmlp", description="ResMLP and MLP-Mixer: build, train, analyse, ship.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        if os.environ.get("RESMLP_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
