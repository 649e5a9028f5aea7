"""The ``faas`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="faas", description="pyfaas: Python functions as a service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run the whole platform on this machine (like `make dev`)")
    args = parser.parse_args(argv)
    if args.command == "dev":
        from .dev import run_dev

        return run_dev()
    return 2


if __name__ == "__main__":
    sys.exit(main())
