"""Writing and reading a specialist's artifact directory: all of it or nothing.

>>> with staged_directory("models/v1") as staging:
...     (staging / "config.json").write_text("{}")
>>> read_config(Path("models/v1"), kind="zero-shot", format_version=1)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from niche.errors import ArtifactError

__all__ = ["CONFIG_FILE", "read_config", "save_config", "staged_directory", "write_config"]

CONFIG_FILE = "config.json"


@contextmanager
def staged_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``directory`` when the block succeeds.

    On an error the staging directory is removed and ``directory`` is left as it was.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """``config`` as ``config.json`` in ``directory`` (indented, one trailing newline)."""
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def save_config(directory: str | Path, config: dict[str, Any]) -> Path:
    """Save a predictor whose whole artifact is ``config``: ``config.json`` in ``directory``,
    written atomically (staged, then renamed). Returns ``directory``."""
    target = Path(directory)
    with staged_directory(target) as staging:
        write_config(staging, config)
    return target


def read_config(directory: Path, *, kind: str, format_version: int) -> dict[str, Any]:
    """``directory/config.json``, checked to be of ``kind`` at ``format_version``."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; not a saved {kind} specialist", path=path)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: invalid JSON ({exc})", path=path) from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: not a JSON object", path=path)
    if config.get("kind") != kind or config.get("format_version") != format_version:
        raise ArtifactError(
            f"{path}: kind {config.get('kind')!r} format {config.get('format_version')!r} "
            f"is not a {kind} specialist v{format_version}",
            path=path,
        )
    return config
