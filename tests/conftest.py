"""Fixtures shared by the test modules. Each is small and built from the helpers in ``tests/helpers`` so that a
wider-scoped variant (a module's or the session's) is a few lines in the module that needs it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from heygem_pipeline.factory.bucket import Bucket
from tests.helpers import dagster_home_env


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[Path]:
    """An empty folder of this test's own as ``DAGSTER_HOME`` (restored after the test). No instance is created:
    ``heygem_pipeline.instance.setup.init(dagster_home)`` makes one set up as ``make setup`` does."""
    with dagster_home_env(tmp_path / "dagster_home") as home:
        yield home


@pytest.fixture
def memory_bucket() -> Bucket:
    """An empty bucket of this test's own in fsspec's memory filesystem (visible to this process only)."""
    return Bucket(f"memory://test-{uuid.uuid4().hex[:8]}")


# Test files that start servers or render end to end, longest first: `make test`'s xdist workers (--dist loadfile)
# take whole files in collection order, so the long ones start at once and the short ones fill in around them.
LONGEST_FIRST = ("test_studio.py", "test_musetalk_engine.py", "test_ui_runs.py", "test_recovery.py", "test_s3.py",
                 "test_scale_out.py", "test_factory.py", "test_hang.py", "test_upgrade.py", "test_ui.py",
                 "test_sensor_schedule.py", "test_concurrency.py", "test_musetalk_vae.py", "test_musetalk_api.py",
                 "test_musetalk_unet.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order is kept
