"""walletd's version: the installed distribution's, else the source tree's pyproject.toml."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "walletd"


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return source_tree_version()


def source_tree_version() -> str:
    """Run from a checkout that was never installed (python -m app.cli): the version the
    next install would get, marked as such."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        return f"{tomllib.loads(pyproject.read_text())['project']['version']} (source tree, not installed)"
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown (not installed, no pyproject.toml)"
