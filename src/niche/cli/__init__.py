"""The ``niche`` command-line interface (a thin shell over the library)."""

from niche.cli import registry as _registry_commands  # noqa: F401  (registers its commands)
from niche.cli import serve as _serve_command  # noqa: F401
from niche.cli.app import app, main

__all__ = ["app", "main"]
