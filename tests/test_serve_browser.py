"""`embedtool serve` in a real browser: Debian's chromium (headless), driven by Playwright, against the command
running in a subprocess on a free port. Each view is saved as a screenshot under the test's temporary folder
(and copied to ``$EMBEDTOOL_SCREENSHOTS`` when set, which is how docs/serve-*.png are made).

Chromium is installed with apt-get when missing and the tests run as root (as on CI); the tests are skipped, with
the reason, only when no chromium can be found or installed (Playwright comes with the dev extra).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from embedtool.workspace import Workspace

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    return next((p for name in ("chromium", "chromium-browser") if (p := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium executable, installed with apt-get when missing and we are root (CI)."""
    found = _chromium()
    if found is None and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        try:
            if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
                subprocess.run(install, env=env, capture_output=True, timeout=900)
        except (OSError, subprocess.SubprocessError):
            pass
        found = _chromium()
    if found is None:
        pytest.skip("no chromium on this machine and it could not be installed (apt-get install chromium, as root)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`embedtool serve` as a user starts it, in a subprocess; its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedtool", "-w", str(served_workspace.root), "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"embedtool serve did not start:\n{log.read_text()}") from None
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def page(chromium: str, server: str, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"])
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        pg.set_default_timeout(30_000)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(server)
        pg.wait_for_selector("body[data-ready='1']")
        yield pg
        browser.close()
    assert not errors, f"script errors in the page: {errors}"


def _screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"serve-{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 1000
    if os.environ.get("EMBEDTOOL_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["EMBEDTOOL_SCREENSHOTS"]) / path.name)


def _tracks(server: str) -> list[dict]:
    return json.loads(urllib.request.urlopen(f"{server}/api/tracks?limit=200").read())["tracks"]


def test_search_a_track_and_play_the_matched_range(page, server: str, tmp_path: Path) -> None:
    query = _tracks(server)[0]
    page.fill("#track-query", query["name"])
    page.click(f"#track-list li[data-track='{query['track_id']}']")
    page.wait_for_selector("#results li")
    expected = json.loads(urllib.request.urlopen(f"{server}/api/search?track={query['track_id']}&k=10").read())
    shown = [li.get_attribute("data-track") for li in page.locator("#results li").all()]
    assert shown == [m["track_id"] for m in expected["matches"]] and len(shown) >= 3
    first = page.locator("#results li").first
    assert first.get_attribute("data-track") != query["track_id"]  # the query's own track is left out
    assert query["label"] in first.inner_text()  # the tiny model still finds its class first
    _screenshot(page, tmp_path, "search")

    audio = first.locator("audio").first
    start, end = float(audio.get_attribute("data-start")), float(audio.get_attribute("data-end"))
    audio.evaluate("a => a.play()")  # what the player's play button does
    page.wait_for_function("a => !a.paused && a.readyState >= 3 && a.currentTime > 0", arg=audio.element_handle())
    now = audio.evaluate("a => a.currentTime")
    assert start - 0.05 <= now <= end, (start, now, end)
    # it stops at the end of the matched range, not the end of the track
    page.wait_for_function("a => a.paused", arg=audio.element_handle(), timeout=(end - start + 5) * 1000)
    stopped = audio.evaluate("a => a.currentTime")
    assert end - 0.1 <= stopped <= end + 0.5, (stopped, end)


def test_upload_an_excerpt_and_identify_it(page, server: str, tmp_path: Path) -> None:
    target = _tracks(server)[5]
    data, sr = sf.read(target["path"], dtype="float32")
    excerpt = tmp_path / "phone-recording.wav"
    sf.write(excerpt, data[sr : 3 * sr], sr)
    page.select_option("#mode", "identify")
    page.set_input_files("#upload", str(excerpt))
    page.wait_for_selector("#results li")
    assert page.locator("#results li").first.get_attribute("data-track") == target["track_id"]
    assert "identify" in page.inner_text("#query-info")
    assert page.locator("#results li").first.locator("audio").count() == 2  # the match's range and the query's
    _screenshot(page, tmp_path, "upload")

    page.set_input_files("#upload", str(write_bytes(tmp_path / "broken.mp3", b"\x00garbage" * 100)))
    page.wait_for_selector("#message.error:not([hidden])")
    assert "not readable audio" in page.inner_text("#message")


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_map_clusters_classify_and_report(page, server: str, tmp_path: Path) -> None:
    page.click("#tabs button[data-view='map']")
    page.wait_for_function("document.querySelectorAll('#map circle').length === 18")
    point = page.locator("#map circle").nth(3)
    point.hover()
    track = next(t for t in _tracks(server) if t["track_id"] == point.get_attribute("data-track"))
    page.wait_for_function(f"document.querySelector('#map-hover').textContent.includes({track['name']!r})")
    assert page.locator("#legend li").count() == 3  # three clusters
    point.click()
    page.wait_for_selector("#map-results li")
    _screenshot(page, tmp_path, "map")

    page.click("#tabs button[data-view='clusters']")
    page.wait_for_function("document.querySelectorAll('.cluster').length === 3")
    assert page.locator(".cluster audio").count() >= 3
    _screenshot(page, tmp_path, "clusters")

    target = _tracks(server)[12]
    data, sr = sf.read(target["path"], dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, data[: 3 * sr], sr, format="WAV")
    page.click("#tabs button[data-view='classify']")
    page.set_input_files(
        "#classify-upload", files=[{"name": "x.wav", "mimeType": "audio/wav", "buffer": buf.getvalue()}]
    )
    page.wait_for_selector("#predicted")
    assert page.inner_text("#predicted") == target["label"]
    _screenshot(page, tmp_path, "classify")

    page.goto(f"{server}/report/")
    assert page.locator("table").count() >= 1
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    _screenshot(page, tmp_path, "report")
