"""The Dagster UI really serves this code location: the webserver on localhost, pages rendered by headless Chromium.

The test loads the global asset lineage (the four asset groups) and each group's graph page, and checks that every
asset of the factory is drawn; the asset catalog must list them all too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.servers import free_port

pytestmark = pytest.mark.slow

LOCATION = "heygem_pipeline.definitions"
GROUPS = {
    "scripts": {"script_audio", "script_features"},
    "avatars": {"avatar_video", "face_track"},
    "videos": {"lipsync_video"},
    "deliverables": {"campaign_manifest", "campaign_zip"},
}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "heygem_pipeline.instance", "init"], env=env, cwd=REPO, check=True)
    port = free_port()
    log = (home / "webserver.log").open("w")
    server = Path(sys.executable).with_name("dagster-webserver")
    process = subprocess.Popen([str(server), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (home / "webserver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the webserver did not come up in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        # The webserver starts a code server of its own: stop the whole group we started, by its id.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def render_dom(url: str, profile: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs it)")
    result = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                             "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_asset_graph_pages_show_every_asset(webserver: str, tmp_path: Path) -> None:
    lineage = render_dom(f"{webserver}/asset-groups", tmp_path / "lineage")
    assert "Global asset lineage" in lineage
    for group in GROUPS:
        assert group in lineage
    drawn: set[str] = set()
    everything = set().union(*GROUPS.values())
    for group, assets in GROUPS.items():
        dom = render_dom(f"{webserver}/locations/{LOCATION}/asset-groups/{group}", tmp_path / group)
        assert all(asset in dom for asset in assets), group
        drawn |= {asset for asset in everything if asset in dom}
    assert drawn == everything
    catalog = render_dom(f"{webserver}/assets", tmp_path / "catalog")
    assert all(asset in catalog for asset in everything)
