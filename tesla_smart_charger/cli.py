"""Command line: `tesla-smart-charger [--config PATH] [--monitor] ...` and its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tesla_smart_charger import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands are added as their modules land)."""
    parser = argparse.ArgumentParser(prog="tesla-smart-charger", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
