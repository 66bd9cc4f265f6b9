"""The ``ferrymq`` command line: one module per subcommand in ``ferrymq.commands``, parsed by
``ferrymq.commands.parser``."""

from __future__ import annotations

import sys
from types import SimpleNamespace


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    return int(args.func(args))


def _parse(argv: list[str]) -> SimpleNamespace:
    """The command line, as a plain namespace: argparse's ``Namespace`` would keep all of
    ``argparse`` alive for as long as the command runs (``parser.forget``)."""
    from ferrymq.commands.parser import build_parser

    return SimpleNamespace(**vars(build_parser(argv).parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
