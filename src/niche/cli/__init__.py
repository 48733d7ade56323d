"""The ``niche`` command-line interface (a thin shell over the library)."""

from niche.cli.app import app, main

__all__ = ["app", "main"]
