"""The ``endoedge`` command line: ``export``, ``detect``, ``run``, ``bench``, ``demo``, ``train``, ``eval``,
``quantize``, ``build``, ``export-triton``, ``batch``, ``jetson``.

User and environment errors (:class:`~endoedge.errors.EndoedgeError`) print one line and exit
1; ``--debug`` shows the traceback instead. Log lines and the error line go through
:func:`~endoedge.spec.redact.redact` (no camera password or token in any output).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from endoedge._version import __version__
from endoedge.errors import EndoedgeError
from endoedge.spec.redact import RedactingFilter, redact

SUBCOMMANDS = (
    "export", "detect", "run", "bench", "demo", "train", "eval", "quantize", "build", "export-triton",
    "batch", "jetson", "latency",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommand modules add their own parsers)."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="endoedge",
        description="Deploy trained PyTorch endoscopy detectors: export to ONNX, run on "
        "ONNX Runtime or PyTorch, measure latency.",
    )
    parser.add_argument("--version", action="version", version=f"endoedge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"endoedge.cli.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # no credential in any log line (camera URLs)
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    try:
        return int(args.func(args) or 0)
    except EndoedgeError as err:
        if args.debug:
            raise
        print(f"endoedge {args.command}: error: {redact(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"endoedge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
