"""`heygem studio` in a real browser: the system Chromium driven by Playwright against a real studio, its Dagster
webserver, daemon and Celery workers. Upload, generate, follow n/N (through a reload), watch, download the zip; a bad
presenter fails alone with its reason; Cancel stops a request and leaves nothing half-written; only the bucket's
outputs are served; the voice picked for typed text is the campaign's voice."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from heygem_pipeline.api import FactoryClient, PairProgressState, RequestState
from heygem_pipeline.demo_media import write_still
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.instance.services import RunDir, supervisor_alive
from heygem_pipeline.studio.handlers import Studio, Upload
from heygem_pipeline.studio.progress import StatusCache
from heygem_pipeline.studio.uploads import StudioOptions
from tests.helpers import REPO
from tests.helpers.servers import free_port, wait_for
from tests.helpers.voice_models import kokoro_standin, kokoro_voices, piper_standin

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SIZE = {"width": 640, "height": 360}


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    words = "Hello and welcome. This video was made in the studio, from one voice."
    voice = synthesize_speech(words, folder / "welcome.wav")
    (folder / "welcome.txt").write_text(words)  # what the voice says: its subtitles
    long_voice = synthesize_speech("A long take that nobody wants any more. " * 12, folder / "long take.wav")
    presenter = write_still(folder / "anna.png", **SIZE)
    broken = folder / "broken.mp4"
    broken.write_text("this is a text file, not a video")
    return {"voice": voice, "transcript": folder / "welcome.txt", "long": long_voice, "presenter": presenter,
            "broken": broken}


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The studio's voices folder: a stand-in Piper voice and a stand-in Kokoro model with two speakers."""
    folder = tmp_path_factory.mktemp("voices")
    piper_standin(folder / "en_US-test-medium.onnx")
    kokoro_standin(folder / "kokoro" / "kokoro-v1.0.onnx")
    kokoro_voices(folder / "kokoro" / "voices-v1.0.bin", ("af_test", "zf_test"))
    return folder


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, voices: Path) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("studio_home")
    bucket = tmp_path_factory.mktemp("studio_bucket")
    port, dagster_port = free_port(), free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "HEYGEM_BUCKET": str(bucket)}
    log_path = tmp_path_factory.mktemp("logs") / "studio.log"
    log = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "heygem_pipeline.cli", "studio", "--port", str(port),
                                "--dagster-port", str(dagster_port), "--voices", str(voices)], env=env, cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            return http_status(url) == 200
        except OSError:
            return False

    try:
        wait_for(serving, 240, "the studio")
        yield {"url": url, "dagster": f"http://127.0.0.1:{dagster_port}", "bucket": bucket, "home": home}
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        process.wait(timeout=90)
        log.close()
        assert not supervisor_alive(RunDir(home)), "heygem studio left its services running"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def open_page(browser, url: str, locale: str = "en-US"):
    page = browser.new_page(viewport={"width": 1280, "height": 1800}, locale=locale, accept_downloads=True)
    page.goto(url)
    page.wait_for_timeout(2500)  # the page's load event (language, request from the URL) has run
    return page


def progress_text(page, element: str) -> str:
    return page.locator(f"#{element}").inner_text()


def test_batch_in_the_browser(studio: dict, browser, media: dict[str, Path], tmp_path: Path) -> None:
    page = open_page(browser, studio["url"])
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-voices input[type=file]").set_input_files([str(media["voice"]), str(media["transcript"])])
    page.locator("#batch-presenters input[type=file]").set_input_files([str(media["presenter"]),
                                                                         str(media["broken"])])
    page.locator("#batch-name textarea, #batch-name input").first.fill("launch")
    page.wait_for_timeout(1000)
    page.locator("#batch-generate").click()
    seen = {wait_for(lambda: "/2 pairs" in (text := progress_text(page, "batch-progress")) and text, 120,
                     "n/N in the page")}
    page.screenshot(path=str(tmp_path / "batch-running.png"), full_page=True)

    # A reload (the request's id is in the URL) shows the same request, still moving.
    address = page.evaluate("window.location.href")
    assert "?request=" in address
    page.close()
    page = open_page(browser, address)
    wait_for(lambda: "/2 pairs" in progress_text(page, "batch-progress"), 60, "progress after the reload")

    def finished() -> bool:
        text = progress_text(page, "batch-progress")
        seen.add(text)
        return "done" in text

    wait_for(finished, 420, "the batch to finish")
    assert any(text.startswith(("0/2", "1/2")) for text in seen), seen  # n/N moved
    assert "2/2 pairs · done" in progress_text(page, "batch-progress")
    pairs = page.locator("#batch-pairs").inner_text()
    assert "broken.mp4" in pairs and "not a readable video or photo" in pairs  # the bad file says why
    page.screenshot(path=str(tmp_path / "batch-done.png"), full_page=True)

    # The delivered video plays in the page, with the voice's duration.
    voice_seconds = probe(media["voice"]).duration
    video = page.locator("#batch-gallery video").first
    video.wait_for(state="attached", timeout=30_000)
    duration = page.evaluate("""async (v) => { if (v.readyState < 1) await new Promise(r =>
        v.addEventListener('loadedmetadata', r, {once: true})); return v.duration; }""",
                             video.element_handle())
    assert abs(duration - voice_seconds) < 0.3, (duration, voice_seconds)

    # One click gives the zip: the video, its subtitles and the manifest.
    with page.expect_download() as download:
        page.locator("#batch-zip").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    names = set(archive.namelist())
    assert {"welcome__anna.mp4", "welcome__anna.srt", "welcome__anna.vtt", "manifest.csv"} <= names, names
    assert not any("broken" in n and n.endswith(".mp4") for n in names)
    page.close()

    # The history, read from the instance in a fresh page: the request is there, and opens in the batch tab.
    page = open_page(browser, studio["url"])
    page.get_by_role("tab", name="History").click()
    request = address.split("request=")[1]
    row = page.locator("#history-table").get_by_text(request).last
    row.wait_for(timeout=30_000)
    assert "2/2" in page.locator("#history-table").inner_text()
    row.click()
    wait_for(lambda: "2/2 pairs · done" in progress_text(page, "batch-progress"), 30, "the request from the history")
    assert request in page.evaluate("window.location.href")
    page.close()


def test_try_one_with_typed_text_in_chinese(studio: dict, browser, media: dict[str, Path], tmp_path: Path) -> None:
    page = open_page(browser, studio["url"], locale="zh-CN")
    assert page.get_by_role("tab", name="单个试做").is_visible()  # the browser's language
    page.locator("#single-text textarea").fill("Good morning. This is a quick try from typed text.")
    page.locator("#single-presenter input[type=file]").set_input_files([str(media["presenter"])])
    page.wait_for_timeout(1000)
    page.locator("#single-generate").click()
    wait_for(lambda: "完成" in progress_text(page, "single-progress"), 300, "the video")
    video = page.locator("#single-video video").first
    video.wait_for(state="attached", timeout=30_000)
    assert page.evaluate("""async (v) => { if (v.readyState < 1) await new Promise(r =>
        v.addEventListener('loadedmetadata', r, {once: true})); return v.duration; }""", video.element_handle()) > 2
    assert page.locator("#single-video track").count() == 1  # the subtitles, as a track
    downloads = page.locator("#single-downloads").inner_text()
    assert ".mp4" in downloads and ".srt" in downloads and ".vtt" in downloads
    assert "sync" in progress_text(page, "single-progress")
    page.screenshot(path=str(tmp_path / "single-zh.png"), full_page=True)
    page.close()


def test_only_outputs_are_served(studio: dict) -> None:
    outputs = studio["bucket"] / "outputs"
    outputs.mkdir(exist_ok=True)
    (outputs / "served.txt").write_text("a deliverable")
    (studio["bucket"] / "scripts").mkdir(exist_ok=True)
    secret = studio["bucket"] / "scripts" / "secret.txt"
    secret.write_text("not for the page")
    assert http_status(f"{studio['url']}/gradio_api/file={outputs / 'served.txt'}") == 200
    for refused in ("/etc/passwd", str(secret), str(studio["home"] / "dagster.yaml"),
                    f"{outputs}/../scripts/secret.txt"):
        assert http_status(f"{studio['url']}/gradio_api/file={refused}") in (403, 404), refused


def test_the_network_needs_a_login_to_start() -> None:
    result = subprocess.run([sys.executable, "-m", "heygem_pipeline.cli", "studio", "--host", "0.0.0.0"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--host 0.0.0.0 makes the studio reachable from the network" in result.stderr
    assert "--auth user:password" in result.stderr


def test_cancel_stops_a_request_and_leaves_nothing_half_written(studio: dict, media: dict[str, Path]) -> None:
    client = FactoryClient(studio["dagster"])
    handlers = Studio(Bucket(str(studio["bucket"])), client)
    submission = handlers.submit_batch([Upload.of(media["long"])], [Upload.of(media["presenter"])], [], [],
                                       "to cancel", StudioOptions())
    request = submission.request_id
    wait_for(lambda: any(p.state == PairProgressState.RENDERING for p in client.status(request).pairs), 300,
             "the render")
    assert handlers.cancel(request) >= 1
    status = wait_for(lambda: (s := client.status(request)).state == RequestState.CANCELED and s, 120,
                      "the request to be canceled")
    assert [p.state for p in status.pairs] == [PairProgressState.CANCELED]
    time.sleep(8)  # a sensor tick or two: nothing is started for a canceled request
    again = client.status(request)
    assert again.state == RequestState.CANCELED and not again.zip
    assert not list(studio["bucket"].rglob("*.tmp*"))
    assert not list((studio["bucket"] / "outputs").glob("to cancel/*.mp4"))
    assert not list((studio["bucket"] / "outputs").glob("to_cancel*/*.mp4"))

    # Retry failed: a new request for the canceled pair, which is then delivered.
    retried = handlers.retry_failed(request)
    assert retried != request
    done = client.wait(retried, timeout=420)
    assert done.state == RequestState.DONE and [p.state for p in done.pairs] == [PairProgressState.RENDERED]


def test_one_query_for_every_open_page(studio: dict, media: dict[str, Path]) -> None:
    """Five pages polling one request cost the webserver what one page costs."""
    client = FactoryClient(studio["dagster"])
    request = client.requests(limit=1)[0].request_id
    one = FactoryClient(studio["dagster"])
    one.status(request)
    per_status = one.queries
    cache = StatusCache(client, fresh_seconds=60)
    before = client.queries
    threads = [threading.Thread(target=cache.get, args=(request,)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.queries - before == per_status


def test_the_voice_picked_for_typed_text_is_the_campaigns(studio: dict, browser, voices: Path, media: dict[str, Path],
                                                          tmp_path: Path) -> None:
    page = open_page(browser, studio["url"])
    page.locator("#single-text textarea").fill("A quick try in another voice.")
    page.locator("#single-presenter input[type=file]").set_input_files([str(media["presenter"])])
    choice = page.locator("#single-voice-choice input")
    assert choice.input_value() == "Default voice"  # the default: no voice: in the campaign
    choice.click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=10_000)
    shown = [text.replace("✓", "").strip() for text in options.all_inner_texts()]  # ✓ marks the current one
    assert shown == ["Default voice", "Piper · en_US-test-medium", "Kokoro · af_test", "Kokoro · zf_test"]
    page.wait_for_timeout(500)  # the list has faded in
    page.screenshot(path=str(tmp_path / "single-voice-choice-open.png"), full_page=True)
    page.get_by_role("option", name="Piper · en_US-test-medium").click()
    assert choice.input_value() == "Piper · en_US-test-medium"
    # In Chinese: the label, its note and the built-in voice's name change; the pick stays.
    page.get_by_label("中文").check()
    wait_for(lambda: "文字朗读音色" in page.locator("#single-voice-choice").inner_text(), 30, "the Chinese label")
    assert choice.input_value() == "Piper · en_US-test-medium"
    page.get_by_role("tab", name="批量").click()
    assert page.locator("#batch-voice-choice input").input_value() == "默认音色"
    page.screenshot(path=str(tmp_path / "batch-voice-choice-zh.png"), full_page=True)
    page.get_by_role("tab", name="单个试做").click()
    page.wait_for_timeout(1000)
    page.locator("#single-generate").click()
    wait_for(lambda: "?request=" in page.evaluate("window.location.href"), 60, "the request")
    request = page.evaluate("window.location.href").split("request=")[1]
    page.close()
    written = [yaml.safe_load(p.read_text()) for p in (studio["bucket"] / "campaigns").glob("try-*.yaml")]
    voiced = [c["voice"] for c in written if "voice" in c]
    assert voiced == [{"engine": "piper", "model": str((voices / "en_US-test-medium.onnx").resolve())}], written
    # The stand-in voice speaks it in a second or two: delivered, its captions timed by the Piper voice itself.
    done = FactoryClient(studio["dagster"]).wait(request, timeout=300)
    assert done.state == RequestState.DONE and [p.state for p in done.pairs] == [PairProgressState.RENDERED]
    manifest = (studio["bucket"] / "outputs" / done.campaign / "manifest.csv").read_text()
    assert ",voice," in manifest.splitlines()[1], manifest  # captions_timing: the voice's own phoneme timing
