"""Upgrades lose nothing (issue 19, point 6): a bucket and a Dagster instance that `heygem run` of commit 08acc0d
left fully delivered are up to date for today's code. `heygem run` on them renders nothing, prepares no script or
avatar again, checks nothing again, and leaves the manifest, the zip and every other file as they were.

The fixture (tests/data/upgrade-08acc0d/, made by the old code: see its README.md) is copied to a temporary folder
with its files' modification times restored (git keeps none, and uploads' freshness stamps hold them). Today's code
is driven only through its stable surfaces: the `heygem` command in a subprocess, the bucket's files and the Dagster
instance (read with Dagster's own API). `heygem run` starts the instance's embedded services (Redis, a code server,
the daemon, two workers) and stops them again, as for any user: most of the test's 11 to 28 s (2 busy cores).

The instance keeps the old `dagster.yaml`, as `heygem run` does (only `make setup` replaces it). That file names this
project's run launcher and storage classes by module path (`heygem_pipeline.run_launcher`,
`heygem_pipeline.instance_storage`): moving those modules breaks every existing instance, and this test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import dagster_home_env
from tests.helpers.upgrade_fixture import FIXTURE, restore_mtimes

pytestmark = pytest.mark.slow

CAMPAIGN = "launch"
PAIRS = 6
# Jobs that re-render, re-check or prepare again: none of them may run on an up-to-date bucket.
STAGE_JOBS = ("script_job", "avatar_job", "pair_job", "check_job")
DELIVERABLES = (f"outputs/{CAMPAIGN}/manifest.csv", f"outputs/{CAMPAIGN}/manifest.parquet",
                f"outputs/{CAMPAIGN}/{CAMPAIGN}.zip")


@dataclass(frozen=True)
class Run:
    job: str
    item: str  # the heygem/item tag: what the run did, e.g. "render:viseme-crf18-veryfast:hello|anna"
    status: str


@dataclass
class Upgrade:
    bucket: Path
    home: Path
    files_before: dict[str, str]  # bucket file -> sha256
    files_after: dict[str, str]
    json_before: dict[str, dict]  # every JSON file under work/, parsed (stamps, records)
    json_after: dict[str, dict]
    runs_before: dict[str, Run]  # run id -> run
    runs_after: dict[str, Run]
    returncode: int
    output: str  # what `heygem run` printed, stdout then stderr

    @property
    def new_runs(self) -> dict[str, Run]:
        return {run_id: run for run_id, run in self.runs_after.items() if run_id not in self.runs_before}

    def explain(self) -> str:
        """What changed, and why (the stamps' and records' fields before → after), for a failure message."""
        lines = [f"runs created by today's `heygem run` ({len(self.new_runs)}):"]
        lines += [f"  {run.job:<12} {run.status:<8} {run.item}" for run in self.new_runs.values()] or ["  none"]
        changed = sorted(rel for rel in self.files_before.keys() & self.files_after.keys()
                         if self.files_before[rel] != self.files_after[rel])
        added = sorted(self.files_after.keys() - self.files_before.keys())
        removed = sorted(self.files_before.keys() - self.files_after.keys())
        lines.append(f"bucket files changed ({len(changed)}), added ({len(added)}), removed ({len(removed)}):")
        for rel in changed:
            lines.append(f"  changed {rel}")
            if rel.endswith(".zip"):
                lines += zip_differences(FIXTURE / "bucket" / rel, self.bucket / rel)
            before, after = self.json_before.get(rel), self.json_after.get(rel)
            if before is not None and after is not None:
                for key in sorted(before.keys() | after.keys()):
                    if before.get(key) != after.get(key) and not _incidental(key):
                        lines.append(f"      {key}: {before.get(key)!r}\n        → {after.get(key)!r}")
        lines += [f"  added   {rel}" for rel in added] + [f"  removed {rel}" for rel in removed]
        lines += ["`heygem run` said:", *("  " + line for line in self.output.splitlines())]
        return "\n".join(lines)


def _incidental(key: str) -> bool:
    """Fields of stamps and records that change with every write (when, how long, which run), not why."""
    return key in ("at", "run_id") or key.endswith(("_at", "_seconds"))


def zip_differences(before: Path, after: Path) -> list[str]:
    """Members added, removed, or with other content or dates."""
    with zipfile.ZipFile(before) as old, zipfile.ZipFile(after) as new:
        was, now = {i.filename: i for i in old.infolist()}, {i.filename: i for i in new.infolist()}
    lines = [f"      member {name}: {'added' if name in now else 'removed'}"
             for name in sorted(was.keys() ^ now.keys())]
    for name in sorted(was.keys() & now.keys()):
        if was[name].CRC != now[name].CRC:
            lines.append(f"      member {name}: other content")
        elif was[name].date_time != now[name].date_time:
            lines.append(f"      member {name}: same content, dated {now[name].date_time} (was {was[name].date_time})")
    return lines


def read_runs(home: Path) -> dict[str, Run]:
    from dagster import DagsterInstance

    # DAGSTER_HOME set while the instance is open: its storage resolves folders from it.
    with dagster_home_env(home), DagsterInstance.from_config(str(home)) as instance:
        return {run.run_id: Run(run.job_name, run.tags.get("heygem/item", ""), run.status.value)
                for run in instance.get_runs()}


def snapshot(bucket: Path) -> tuple[dict[str, str], dict[str, dict]]:
    files, parsed = {}, {}
    for path in sorted(p for p in bucket.rglob("*") if p.is_file()):
        rel = path.relative_to(bucket).as_posix()
        data = path.read_bytes()
        files[rel] = hashlib.sha256(data).hexdigest()
        if rel.startswith("work/") and rel.endswith(".json"):
            with contextlib.suppress(ValueError):
                parsed[rel] = json.loads(data)
    return files, parsed


def heygem_command() -> list[str]:
    script = Path(sys.executable).parent / "heygem"
    return [str(script)] if script.exists() else [sys.executable, "-m", "heygem_pipeline.cli"]


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory: pytest.TempPathFactory) -> Upgrade:
    root = tmp_path_factory.mktemp("upgrade")
    bucket, home = root / "bucket", root / "dagster_home"
    shutil.copytree(FIXTURE / "bucket", bucket)
    # The instance as the old code left it, its dagster.yaml included (only `make setup` replaces that file).
    shutil.copytree(FIXTURE / "dagster_home", home)
    restore_mtimes(bucket)
    files_before, json_before = snapshot(bucket)
    runs_before = read_runs(home)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HEYGEM_")}  # the defaults
    env.update(HEYGEM_BUCKET=str(bucket), DAGSTER_HOME=str(home), PYTHONUNBUFFERED="1")
    result = subprocess.run([*heygem_command(), "run"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    print(output)
    files_after, json_after = snapshot(bucket)
    return Upgrade(bucket, home, files_before, files_after, json_before, json_after, runs_before, read_runs(home),
                   result.returncode, output)


def test_the_fixture_is_what_the_old_code_delivered(upgrade: Upgrade) -> None:
    assert {run.job for run in upgrade.runs_before.values()} == {*STAGE_JOBS, "campaign_job"}
    assert sum(run.job == "pair_job" for run in upgrade.runs_before.values()) == PAIRS
    assert {run.status for run in upgrade.runs_before.values()} == {"SUCCESS"}


def test_nothing_is_rendered_prepared_or_checked_again(upgrade: Upgrade) -> None:
    again = [run for run in upgrade.new_runs.values() if run.job in STAGE_JOBS]
    assert not again, f"today's `heygem run` redid work the old code had done:\n{upgrade.explain()}"
    renders = {rel: record.get("render_id") for rel, record in upgrade.json_before.items()
               if rel.startswith("work/renders/") and "render_id" in record and not rel.endswith(".quality.json")}
    assert len(renders) == PAIRS
    now = {rel: (upgrade.json_after.get(rel) or {}).get("render_id") for rel in renders}
    assert now == renders, f"render records changed:\n{upgrade.explain()}"


def test_the_deliverables_are_byte_identical(upgrade: Upgrade) -> None:
    changed = [rel for rel in DELIVERABLES if upgrade.files_after.get(rel) != upgrade.files_before[rel]]
    assert not changed, f"{', '.join(changed)} rewritten with other bytes:\n{upgrade.explain()}"


def test_no_file_of_the_bucket_changes(upgrade: Upgrade) -> None:
    assert upgrade.files_after == upgrade.files_before, f"the bucket changed:\n{upgrade.explain()}"


def test_every_pair_is_still_delivered(upgrade: Upgrade) -> None:
    # 1: two pairs are check_failed (an .mp3 voice's length check), as they were; any other failure is 2 or a
    # different report.
    assert upgrade.returncode == 1, upgrade.output
    manifest = pd.read_csv(upgrade.bucket / "outputs" / CAMPAIGN / "manifest.csv")
    assert len(manifest) == PAIRS
    assert manifest.status.value_counts().to_dict() == {"ok": 4, "check_failed": 2}
    for output in manifest.output:
        assert (upgrade.bucket / "outputs" / CAMPAIGN / output).stat().st_size > 1000
    assert f"{PAIRS} pairs, 2 not ok" in upgrade.output
    assert "deliverables not built" not in upgrade.output


def test_the_old_runs_stay_readable(upgrade: Upgrade) -> None:
    from dagster import DagsterEventType, DagsterInstance

    assert upgrade.runs_before.items() <= upgrade.runs_after.items()
    with dagster_home_env(upgrade.home), DagsterInstance.from_config(str(upgrade.home)) as instance:
        for run_id in upgrade.runs_before:
            assert instance.all_logs(run_id, of_type=DagsterEventType.RUN_SUCCESS), run_id
