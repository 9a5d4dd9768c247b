"""Helpers shared by the tests: synthetic media (``media_factory``, ``avatar_factory``), real servers and process
trees (``servers``), and the environment of a Dagster instance (here)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def dagster_home_env(home: Path) -> Iterator[Path]:
    """``DAGSTER_HOME`` set to ``home`` (created if missing) until the block ends, then restored: for fixtures of
    any scope (the ``dagster_home`` fixture is the per-test one)."""
    home.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        yield home
