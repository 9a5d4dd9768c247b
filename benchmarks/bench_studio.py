"""The studio's costs (issue 18, point 8), measured side by side in one run on a real `heygem ui` + `heygem studio`:

- Generate (files already uploaded) → the request's first run queued in the instance, and → its plan recorded;
- the studio server's memory while a 100 MB and a 1 GB video are uploaded (flat: streamed to disk);
- GraphQL queries per second reaching the webserver with 1 and with 5 pages open on one 200-pair request (counted
  by a forwarding proxy in front of the webserver);
- time for a page opened on that request to show its 200-pair status.

The instance runs with HEYGEM_AUTOMATION=0: no sensor moves the 200-pair request, so every page polls an open
request whose status does not change.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.common import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to ``target`` and counts the GraphQL POSTs."""

    daemon_threads = True

    def __init__(self, port: int, target: str) -> None:
        self.target, self.graphql = target, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, body: bytes | None) -> None:
                if self.command == "POST" and self.path.endswith("/graphql"):
                    proxy.graphql += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(f"{proxy.target}{self.path}", data=body, headers=headers,
                                                 method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        payload, status, reply = response.read(), response.status, response.headers
                except urllib.error.HTTPError as error:
                    payload, status, reply = error.read(), error.code, error.headers
                self.send_response(status)
                for key, value in reply.items():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        super().__init__(("127.0.0.1", port), Handler)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _upload_peak(url: str, pid: int, path: Path) -> tuple[float, float, float]:
    """(RSS before, peak RSS during, seconds) of the studio while ``path`` is uploaded through Gradio's route."""
    import httpx

    before, peak, done = _rss_mb(pid), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with path.open("rb") as handle:
        response = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, handle, "video/mp4")},
                              timeout=600)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    response.raise_for_status()
    return before, peak[0], seconds


def _best_load(browser, address: str, element: str, text: str, rounds: int = 3) -> float:
    """Best of ``rounds``: seconds from opening ``address`` until ``#element`` shows ``text`` (any text if empty)."""
    best = float("inf")
    for _ in range(rounds):
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(address)
        page.wait_for_function(f"(() => {{ const e = document.querySelector('#{element}'); "
                               f"return e && e.innerText.length > 0 && e.innerText.includes({text!r}); }})()",
                               timeout=60_000)
        best = min(best, time.perf_counter() - started)
        page.close()
    return round(best, 3)


def run() -> dict:
    from playwright.sync_api import sync_playwright

    from heygem_pipeline.api import FactoryClient
    from heygem_pipeline.factory.bucket import Bucket
    from heygem_pipeline.studio.uploads import StudioOptions, write_campaign

    work = Path(tempfile.mkdtemp(prefix="heygem-bench-studio-"))
    home, bucket = work / "home", work / "bucket"
    for folder in (bucket / "scripts", bucket / "avatars"):
        folder.mkdir(parents=True)
    # 20 voices × 10 presenters: names only matter (no sensor runs them).
    voices = [f"voice{i:02d}.wav" for i in range(20)]
    presenters = [f"presenter{i:02d}.png" for i in range(10)]
    for name in voices:
        (bucket / "scripts" / name).write_bytes(b"RIFF0000WAVE")
    for name in presenters:
        (bucket / "avatars" / name).write_bytes(b"\x89PNG")
    env = {**os.environ, "DAGSTER_HOME": str(home), "HEYGEM_BUCKET": str(bucket), "HEYGEM_AUTOMATION": "0"}
    ui_port, proxy_port, studio_port = _free_port(), _free_port(), _free_port()
    processes = []
    figures: dict = {}
    try:
        processes.append(subprocess.Popen([sys.executable, "-m", "heygem_pipeline.cli", "ui", "--port",
                                           str(ui_port)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        webserver = f"http://127.0.0.1:{ui_port}"
        _wait(f"{webserver}/server_info")
        proxy = CountingProxy(proxy_port, webserver)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        processes.append(subprocess.Popen([sys.executable, "-m", "heygem_pipeline.cli", "studio", "--port",
                                           str(studio_port), "--dagster-url", f"http://127.0.0.1:{proxy_port}"],
                                          env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        studio = f"http://127.0.0.1:{studio_port}"
        _wait(studio)
        client = FactoryClient(webserver)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            # 1. Generate → first run queued (a voice and a presenter already uploaded into the page).
            page = browser.new_page()
            page.goto(studio)
            page.wait_for_timeout(2500)
            page.get_by_role("tab", name="Batch").click()
            page.locator("#batch-voices input[type=file]").set_input_files([str(bucket / "scripts" / voices[0])])
            page.locator("#batch-presenters input[type=file]").set_input_files(
                [str(bucket / "avatars" / presenters[0])])
            page.wait_for_timeout(2000)
            known = {r.request_id for r in client.requests(10)}
            clicked = time.time()
            page.locator("#batch-generate").click()
            while not (new := [r for r in client.requests(10) if r.request_id not in known]):
                time.sleep(0.02)
            figures["generate_to_first_run_queued_s"] = round(new[0].created - clicked, 3)
            while client.status(new[0].request_id).state.value == "planning":
                time.sleep(0.05)
            figures["generate_to_plan_recorded_s"] = round(time.time() - clicked, 3)
            page.close()

            # 2. The 200-pair request, followed by 1 and by 5 pages.
            name = write_campaign(Bucket(str(bucket)), "two hundred", voices, presenters, StudioOptions())
            request = client.submit(campaign=name, bucket=str(bucket))
            while client.status(request).state.value == "planning":
                time.sleep(0.2)
            address = f"{studio}/?request={request}"
            # The same page without a request is what loading the page itself costs.
            figures["page_ready_without_request_s"] = _best_load(browser, studio, "single-progress", "")
            figures["page_shows_200_pair_status_s"] = _best_load(browser, address, "batch-progress", "/200 pairs")
            for count in (1, 5):
                pages = [browser.new_page() for _ in range(count)]
                for open_page in pages:
                    open_page.goto(address)
                time.sleep(5)  # every page has loaded and polls
                before, started = proxy.graphql, time.perf_counter()
                time.sleep(20)
                figures[f"graphql_per_s_{count}_pages"] = round((proxy.graphql - before) /
                                                               (time.perf_counter() - started), 2)
                for open_page in pages:
                    open_page.close()
            browser.close()

        # 3. Memory of the studio's server while it receives uploads.
        studio_pid = processes[1].pid
        for size_mb in (100, 1024):
            video = work / f"upload_{size_mb}mb.mp4"
            with video.open("wb") as handle:
                handle.truncate(size_mb * 1024 * 1024)
            before, peak, seconds = _upload_peak(studio, studio_pid, video)
            figures[f"upload_{size_mb}mb"] = {"rss_before_mb": round(before), "rss_peak_mb": round(peak),
                                              "seconds": round(seconds, 1)}
            video.unlink()
        figures["ratio_graphql_5_vs_1_pages"] = round(figures["graphql_per_s_5_pages"] /
                                                      max(figures["graphql_per_s_1_pages"], 1e-9), 2)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
