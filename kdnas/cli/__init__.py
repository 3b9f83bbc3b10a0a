"""The `kdnas` command line (``kdnas.cli.main(argv)`` runs it in-process, as the tests do)."""

from kdnas.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
