"""The ``pyro-ebm`` command line (subcommands arrive with the main-job issue)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-ebm",
        description="Energy-based models in Pyro: train, sample, evaluate and report.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="sample an EnergyDistribution and print a summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyro-ebm`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
