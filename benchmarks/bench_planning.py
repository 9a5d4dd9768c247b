"""Planning at scale: campaigns of many tiny uploads, registration and planning only (nothing is rendered).

For N scripts × 10 avatars (500 and 2,000 pairs): the time to register the partitions on a fresh instance, the
time of a bucket-sensor tick with nothing new (every stage already requested), `heygem run`'s planning of the
runs, and the time the ``lipsync_video`` asset's Partitions page takes to show its grid in headless Chromium
(driven over the DevTools protocol: navigation until the pair count is on screen). Each must grow no faster than
linearly with the number of pairs: the figures are printed with their ratio between the two sizes (4× the pairs).

    .venv/bin/python -m benchmarks.bench_planning [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AVATARS = 10
SIZES = (50, 200)  # scripts: 500 and 2,000 pairs
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Runs in a fresh process per size: registration, then sensor ticks with nothing new and the client's planning
# (best of REPEATS each).
MEASURE = """
import json, sys, time
REPEATS = 3
from pathlib import Path
from dagster import build_sensor_context
from heygem_pipeline.instance import init
bucket = sys.argv[1]
started = time.perf_counter()
instance = init()
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import MediaOptions, RenderOptions
from heygem_pipeline.factory.plan import plan_work
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import scan_bucket
store = Bucket(bucket)
scan = scan_bucket(store)
t0 = time.perf_counter()
for name, keys in (("script", scan.scripts), ("avatar", scan.avatars), ("campaign", scan.campaigns)):
    instance.add_dynamic_partitions(name, sorted(set(keys) - set(instance.get_dynamic_partitions(name))))
register_s = time.perf_counter() - t0
from heygem_pipeline.definitions import defs
from resources import BucketResource, build_resources
from heygem_pipeline.settings import Settings
resources = {**build_resources(Settings()), "bucket": BucketResource(url=bucket)}
sensor = defs.resolve_sensor_def("bucket_sensor")
def tick(cursor):
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    result = sensor(context)
    return result, context
first, _ = tick(None)
from heygem_pipeline.factory.plan import plan_items
def plan():
    state = FactoryState(store, scan_bucket(store), MediaOptions(), RenderOptions())
    work = plan_work(state, list(scan.campaigns.values()), retry_failed=True)
    return plan_items(state, work, list(scan.campaigns.values()))
items = plan()  # the first call also imports and warms caches
tick_s = plan_s = float("inf")
for _ in range(REPEATS):  # best of a few: one garbage collection can double a sub-second figure
    t0 = time.perf_counter()
    second, _ = tick(first.cursor)
    tick_s = min(tick_s, time.perf_counter() - t0)
    assert not second.run_requests, "a tick after the first must have nothing new"
    t0 = time.perf_counter()
    items = plan()
    plan_s = min(plan_s, time.perf_counter() - t0)
print(json.dumps({"register_s": register_s, "idle_tick_s": tick_s, "client_plan_s": plan_s,
                  "first_tick_requests": len(first.run_requests), "runs_planned": len(items)}))
"""


def build_bucket(root: Path, scripts: int) -> Path:
    """``scripts`` tiny WAV voices and 10 tiny PNG avatars: valid names and sizes, never decoded here."""
    import numpy as np
    import soundfile as sf

    from heygem_pipeline.demo_media import write_still

    (root / "scripts").mkdir(parents=True, exist_ok=True)
    (root / "avatars").mkdir(parents=True, exist_ok=True)
    tone = np.zeros(1600, dtype=np.float32)
    for number in range(scripts):
        sf.write(root / "scripts" / f"script_{number:04d}.wav", tone, 16000)
    for number in range(AVATARS):
        write_still(root / "avatars" / f"avatar_{number:02d}.png", width=64, height=64)
    old = time.time() - 3600  # uploaded long ago: settled on first sight
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _page_seconds(devtools: str, url: str, expected: str, timeout: float = 300.0) -> float:
    """Seconds from navigation until ``expected`` is in the page's text."""
    import websockets

    async with websockets.connect(devtools, max_size=None) as ws:
        ids = iter(range(1, 1_000_000))

        async def call(method: str, **params: object) -> dict:
            number = next(ids)
            await ws.send(json.dumps({"id": number, "method": method, "params": params}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == number:
                    return message.get("result", {})

        await call("Page.enable")
        started = time.perf_counter()
        await call("Page.navigate", url=url)
        while time.perf_counter() - started < timeout:
            found = await call("Runtime.evaluate", expression=f"document.body && document.body.innerText"
                               f".includes({json.dumps(expected)})", returnByValue=True)
            if found.get("result", {}).get("value"):
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url}: {expected!r} not shown within {timeout:.0f} s")


def partitions_page_seconds(home: Path, pairs: int, scratch: Path) -> float:
    """Start the webserver on ``home`` and time the lipsync_video Partitions page in headless Chromium."""
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    port = _free_port()
    log = open(scratch / "webserver.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    chromium_port = _free_port()
    browser = None
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    log_tail = (scratch / "webserver.log").read_text()[-500:]
                    raise RuntimeError(f"webserver did not start: {log_tail}") from None
                time.sleep(0.5)
        chromium = shutil.which("chromium") or "chromium"
        browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--remote-debugging-port={chromium_port}",
                                    f"--user-data-dir={scratch / 'profile'}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{chromium_port}/json", timeout=2) as response:
                    pages = [p for p in json.load(response) if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromium's DevTools did not answer")
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/assets/lipsync_video?view=partitions"
        # Warm the webserver's code location and caches once, then time a fresh load.
        asyncio.run(_page_seconds(pages[0]["webSocketDebuggerUrl"], url, f"{pairs:,}"))
        return asyncio.run(_page_seconds(pages[0]["webSocketDebuggerUrl"], url, f"{pairs:,}"))
    finally:
        for process in (browser, server):
            if process is not None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def measure(root: Path, scripts: int) -> dict[str, float]:
    bucket = build_bucket(root / "bucket", scripts)
    home = root / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    output = subprocess.run([sys.executable, "-c", MEASURE, str(bucket)], env=env, cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    figures["partitions_page_s"] = partitions_page_seconds(home, scripts * AVATARS, root)
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in figures.items()}


def run(keep: Path | None = None) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-planning-")) if keep is None else keep
    try:
        sizes = {scripts * AVATARS: measure(root / str(scripts), scripts) for scripts in SIZES}
        small, large = (sizes[s * AVATARS] for s in SIZES)
        growth = {key: round(large[key] / max(small[key], 1e-6), 2) for key in
                  ("register_s", "idle_tick_s", "client_plan_s", "partitions_page_s")}
        pairs_ratio = SIZES[1] / SIZES[0]
        return {"pairs": sizes, "growth_for_4x_pairs": growth,
                "at_most_linear": all(value <= pairs_ratio * 1.25 for value in growth.values())}
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    figures = run(args.keep)
    print(json.dumps(figures, indent=2))
    return 0 if figures["at_most_linear"] else 1


if __name__ == "__main__":
    sys.exit(main())
