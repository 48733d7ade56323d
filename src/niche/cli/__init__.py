"""The ``niche`` command-line interface (a thin shell over the library)."""

# Importing the command modules registers their commands, in the order `niche --help` lists.
from niche.cli import data as _data_commands  # noqa: F401
from niche.cli import models as _model_commands  # noqa: F401
from niche.cli import registry as _registry_commands  # noqa: F401
from niche.cli import traffic as _traffic_commands  # noqa: F401

# isort: split
from niche.cli import audit as _audit_command  # noqa: F401  (listed after `traffic`)
from niche.cli import demo as _demo_commands  # noqa: F401
from niche.cli import distil as _distil_command  # noqa: F401
from niche.cli import feedback as _feedback_command  # noqa: F401
from niche.cli import general as _general_commands  # noqa: F401
from niche.cli import leaderboard as _leaderboard_command  # noqa: F401
from niche.cli import loop as _loop_command  # noqa: F401
from niche.cli import monitor as _monitor_commands  # noqa: F401
from niche.cli import replay as _replay_command  # noqa: F401
from niche.cli import report as _report_command  # noqa: F401
from niche.cli import serve as _serve_command  # noqa: F401
from niche.cli import tco as _tco_command  # noqa: F401
from niche.cli.app import app, main

__all__ = ["app", "main"]
