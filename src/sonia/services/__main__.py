"""`python -m sonia.services NAME --home HOME`: run one service in this process."""

from __future__ import annotations

import argparse
import sys

from sonia.services.runner import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonia.services")
    parser.add_argument("service")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    return serve(args.service, args.home)


if __name__ == "__main__":
    sys.exit(main())
