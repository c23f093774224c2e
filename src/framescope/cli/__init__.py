"""The ``framescope`` command line: thin wrappers over the library.

One module per group of commands: :mod:`~framescope.cli._offline` (datasets on disk),
:mod:`~framescope.cli._phase` (phase images), :mod:`~framescope.cli._serve` (the dashboard
server) and :mod:`~framescope.cli._live` (detector streams; needs the ``[live]`` extra),
sharing :mod:`~framescope.cli._common`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from framescope.cli import _offline, _phase, _serve

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``framescope`` command (each sets ``func``, its handler)."""
    from framescope import __version__

    parser = argparse.ArgumentParser(
        prog="framescope", description="Lazy, interactive and live 4D-STEM analysis.")
    parser.add_argument("--version", action="version", version=f"framescope {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)
    _offline.add_parsers(sub)
    _phase.add_parsers(sub)
    _serve.add_parser(sub)
    _add_live(sub)
    return parser


def _add_live(sub: Any) -> None:
    """``simulate-stream``, ``replay`` and ``live``; without the [live] extra, say so."""
    try:
        from framescope.cli._live import add_parsers
    except ImportError as e:
        missing = str(e)

        def needs_live(args: argparse.Namespace) -> int:
            raise SystemExit(f"framescope {args.command}: needs the [live] extra "
                             f"(pip install 'framescope[live]'): {missing}")

        for name in ("simulate-stream", "replay", "live"):
            sub.add_parser(name, help="(needs [live])").set_defaults(func=needs_live)
        return
    add_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``framescope`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a framescope error or an existing or missing
        file (the message goes to stderr, without a traceback).

    Examples
    --------
    >>> from framescope.cli import main  # doctest: +SKIP
    >>> main(["info", "scan.npy", "--scan", "64x64"])  # doctest: +SKIP
    """
    from framescope.errors import FramescopeError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FramescopeError, FileExistsError, FileNotFoundError) as e:
        print(f"framescope {args.command}: error: {e}", file=sys.stderr)
        return 2
