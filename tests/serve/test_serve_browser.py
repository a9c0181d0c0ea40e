"""`embedtool serve` in a real browser: Debian's chromium (headless), driven by Playwright, against the command
running in a subprocess on a free port. Each view is saved as a screenshot under the test's temporary folder
(and copied to ``$EMBEDTOOL_SCREENSHOTS`` when set, which is how docs/serve-*.png are made).

Chromium is installed with apt-get when missing and the tests run as root (as on CI); the tests are skipped, with
the reason, only when no chromium can be found or installed (Playwright comes with the dev extra).
"""

from __future__ import annotations

import csv
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
        # a Content-Security-Policy refusal (an inline style or script the page should not have) is a console error
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Refused" in m.text else None)
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
    assert end - 0.05 <= stopped <= end + 0.05, (stopped, end)  # on a timer, not timeupdate's ~0.25 s steps
    assert page.locator("#query-player audio").count() == 1  # the query itself can be heard


def test_the_timeline_marks_the_match_and_plays_from_a_click(page, server: str) -> None:
    query = _tracks(server)[1]
    page.goto(f"{server}/?track={query['track_id']}&mode=similar&k=5")
    page.wait_for_selector("#results li .timeline")
    first = page.locator("#results li").first
    expected = json.loads(urllib.request.urlopen(f"{server}/api/search?track={query['track_id']}&k=5").read())
    m = expected["matches"][0]
    bar = first.locator(".timeline").first
    assert float(bar.get_attribute("data-duration")) == pytest.approx(m["duration_s"], abs=0.01)
    box, mark = bar.bounding_box(), bar.locator(".mark").bounding_box()
    # the mark sits where the matched range is in the track
    assert (mark["x"] - box["x"]) / box["width"] == pytest.approx(m["ref_start_s"] / m["duration_s"], abs=0.02)
    assert mark["width"] / box["width"] == pytest.approx(
        (m["ref_end_s"] - m["ref_start_s"]) / m["duration_s"], abs=0.02
    )
    assert first.locator(".timeline").count() == 2  # the reference's and the query's
    # the track's loudness is drawn under the mark
    page.wait_for_function(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0)",
        arg=bar.locator("canvas").element_handle(),
    )
    # a click in the middle of the mark plays from there to the range's end
    at = (m["ref_start_s"] + m["ref_end_s"]) / 2
    bar.click(position={"x": box["width"] * at / m["duration_s"], "y": box["height"] / 2})
    audio = first.locator("audio").first
    page.wait_for_function("a => !a.paused && a.currentTime > 0", arg=audio.element_handle())
    assert audio.evaluate("a => a.currentTime") == pytest.approx(at, abs=0.25)
    page.wait_for_function("a => a.paused", arg=audio.element_handle(), timeout=10_000)
    assert audio.evaluate("a => a.currentTime") == pytest.approx(m["ref_end_s"], abs=0.05)


def _wait_info(page, start: str) -> None:
    """Until the line above the results starts with ``start`` (the search it describes was answered)."""
    page.wait_for_function("s => document.querySelector('#query-info').textContent.startsWith(s)", arg=start)


def _shown(page) -> list[str]:
    return [li.get_attribute("data-track") for li in page.locator("#results li").all()]


def _answer(server: str, track: str, mode: str = "similar", k: int = 10) -> list[str]:
    url = f"{server}/api/search?track={track}&mode={mode}&k={k}"
    return [m["track_id"] for m in json.loads(urllib.request.urlopen(url).read())["matches"]]


def test_searches_live_in_the_address_and_back_returns(page, server: str) -> None:
    a = _tracks(server)[2]
    page.fill("#track-query", a["name"])
    page.click(f"#track-list li[data-track='{a['track_id']}']")
    page.wait_for_function(f"() => location.search.includes('track={a['track_id']}')")
    page.wait_for_selector("#results li")
    assert "mode=similar" in page.url and "k=10" in page.url
    first = _answer(server, a["track_id"])
    assert _shown(page) == first
    b = page.locator("#results li").first.get_attribute("data-track")
    page.locator("#results li").first.locator("button.link").click()  # "search from this"
    page.wait_for_function(f"() => location.search.includes('track={b}')")
    page.wait_for_function(f"() => document.querySelector('#results li').dataset.track !== {b!r}")
    assert _shown(page) == _answer(server, b)
    page.go_back()
    page.wait_for_function(f"() => location.search.includes('track={a['track_id']}')")
    page.wait_for_function(f"() => document.querySelector('#results li')?.dataset.track === {first[0]!r}")
    assert _shown(page) == first
    # a bookmark: the same address in a new load gives the same search
    page.goto(f"{server}/?track={b}&mode=identify&k=3")
    page.wait_for_selector("#results li")
    assert page.input_value("#mode") == "identify" and page.input_value("#k") == "3"
    assert _shown(page) == _answer(server, b, "identify", 3) and "identify" in page.inner_text("#query-info")


def test_pick_two_tracks_and_search_more_like_these(page, server: str, tmp_path: Path) -> None:
    tracks = _tracks(server)
    a, b = [t for t in tracks if t["label"] == tracks[0]["label"]][:2]
    for t in (a, b):  # each found by name, ctrl-clicked: picked as a seed, not searched
        page.fill("#track-query", t["name"])
        page.click(f"#track-list li[data-track='{t['track_id']}']", modifiers=["Control"])
        page.wait_for_selector(f"#seed-list li[data-track='{t['track_id']}']")
    assert page.locator("#results li").count() == 0  # nothing was searched yet
    page.click("#more-like-these")
    _wait_info(page, "similar to 2 seeds together")
    page.wait_for_selector("#results li")
    url = f"{server}/api/search?track={a['track_id']}&track={b['track_id']}&mode=similar&k=10&combine=mean"
    expected = [m["track_id"] for m in json.loads(urllib.request.urlopen(url).read())["matches"]]
    assert _shown(page) == expected and len(expected) == 10
    assert not {a["track_id"], b["track_id"]} & set(_shown(page))  # one answer, the seeds left out
    assert page.url.count("track=") == 2 and "combine=mean" in page.url
    _screenshot(page, tmp_path, "seeds")
    # the address holds the search: a new load gives it again, by rank fusion this time
    page.goto(f"{server}/?track={a['track_id']}&track={b['track_id']}&k=5&combine=rrf")
    _wait_info(page, "similar to 2 seeds together (rank fusion")
    page.wait_for_selector("#results li")
    assert page.input_value("#combine") == "rrf"
    url = f"{server}/api/search?track={a['track_id']}&track={b['track_id']}&k=5&combine=rrf"
    assert _shown(page) == [m["track_id"] for m in json.loads(urllib.request.urlopen(url).read())["matches"]]
    assert page.locator("#seed-list li").count() == 2


def test_changing_the_mode_searches_again(page, server: str, tmp_path: Path) -> None:
    a = _tracks(server)[3]
    page.goto(f"{server}/?track={a['track_id']}")
    page.wait_for_selector("#results li")
    page.select_option("#mode", "identify")
    page.wait_for_function("() => location.search.includes('mode=identify')")
    page.wait_for_function("() => document.querySelector('#query-info').textContent.startsWith('identify')")
    assert _shown(page) == _answer(server, a["track_id"], "identify")
    page.go_back()  # the previous mode's search
    page.wait_for_function("() => document.querySelector('#query-info').textContent.startsWith('similar')")
    assert page.input_value("#mode") == "similar"

    # an upload is searched again too, and choosing the same file again searches again
    data, sr = sf.read(a["path"], dtype="float32")
    clip = tmp_path / "clip.wav"
    sf.write(clip, data[: 2 * sr], sr)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/api/search" in r.url else None)
    page.set_input_files("#upload", str(clip))
    _wait_info(page, "similar for clip.wav")
    page.select_option("#mode", "identify")
    _wait_info(page, "identify for clip.wav")
    page.set_input_files("#upload", str(clip))
    deadline = time.monotonic() + 20
    while len(posts) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(posts) == 3 and "mode=identify" in posts[1] and "mode=identify" in posts[2], posts


def test_keyboard_only(page, server: str) -> None:
    tracks = _tracks(server)
    target = tracks[0]
    word = target["name"].split("/")[0]  # its folder: several tracks match
    page.focus("#track-query")
    page.keyboard.type(word)
    page.wait_for_selector("#track-list li[data-track]")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.id") == "track-list"
    items = page.locator("#track-list li[data-track]")
    assert items.nth(0).get_attribute("aria-selected") == "true"
    page.keyboard.press("ArrowDown")
    assert (
        items.nth(1).get_attribute("aria-selected") == "true" and items.nth(0).get_attribute("aria-selected") == "false"
    )
    chosen = items.nth(1).get_attribute("data-track")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => location.search.includes('track={chosen}')")
    page.wait_for_selector("#results li")
    assert _shown(page) == _answer(server, chosen)
    # every control is reached by Tab, with a visible focus ring
    page.focus("#track-query")
    reached, outlines = set(), set()
    for _ in range(40):
        page.keyboard.press("Tab")
        who = page.evaluate(
            "(() => { const e = document.activeElement; const s = getComputedStyle(e);"
            " return [e.id || e.className || e.tagName, s.outlineStyle + ' ' + s.outlineWidth]; })()"
        )
        reached.add(who[0])
        outlines.add((who[0], who[1]))
    assert {"mode", "k", "upload", "export-csv", "export-json", "timeline", "link"} <= reached, reached
    assert all(o.startswith("solid") for _, o in outlines), outlines


def test_drop_a_file_and_export_the_results(page, server: str, tmp_path: Path) -> None:
    target = _tracks(server)[6]
    # a file dropped on the page (the drop event a browser gives, with the file in its DataTransfer)
    page.evaluate(
        """async (id) => {
            const bytes = await (await fetch(`/api/audio/${id}`)).arrayBuffer();
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.wav", { type: "audio/wav" }));
            document.querySelector("#results").dispatchEvent(
                new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        target["track_id"],
    )
    _wait_info(page, "similar for dropped.wav")
    page.wait_for_selector("#results li")
    shown = _shown(page)
    assert target["track_id"] not in shown and len(shown) == 10  # the library's own file is recognised, left out
    _screenshot(page, tmp_path, "upload")

    from embedtool.cli.neighbours import COLUMNS

    with page.expect_download() as info:
        page.click("#export-csv")
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows[0] == list(COLUMNS) and len(rows) == 1 + len(shown)
    assert [r[COLUMNS.index("track_id")] for r in rows[1:]] == shown
    assert {r[0] for r in rows[1:]} == {"dropped.wav"} and {r[1] for r in rows[1:]} == {"similar"}
    with page.expect_download() as info:
        page.click("#export-json")
    exported = json.loads(Path(info.value.path()).read_text())
    assert [m["track_id"] for m in exported["matches"]] == shown and exported["query"]["given"] == "dropped.wav"


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
    assert page.locator("#query-player audio").count() == 1

    page.set_input_files("#upload", str(write_bytes(tmp_path / "broken.mp3", b"\x00garbage" * 100)))
    page.wait_for_selector("#message.error:not([hidden])")
    assert "not audio the server can read" in page.inner_text("#message")


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_map_clusters_classify_and_report(page, server: str, tmp_path: Path) -> None:
    page.click("#tabs button[data-view='map']")
    page.wait_for_function("() => document.querySelectorAll('#map circle').length === 18")
    point = page.locator("#map circle").nth(3)
    point.hover()
    track = next(t for t in _tracks(server) if t["track_id"] == point.get_attribute("data-track"))
    page.wait_for_function(f"() => document.querySelector('#map-hover').textContent.includes({track['name']!r})")
    assert page.locator("#legend li").count() == 3  # three clusters
    point.click()
    page.wait_for_selector("#map-results li")
    _screenshot(page, tmp_path, "map")

    page.click("#tabs button[data-view='clusters']")
    page.wait_for_function("() => document.querySelectorAll('.cluster').length === 3")
    assert page.locator(".cluster audio").count() >= 3
    _screenshot(page, tmp_path, "clusters")

    page.click("#tabs button[data-view='duplicates']")
    page.wait_for_selector("#duplicates-summary")
    assert "among 18 tracks" in page.inner_text("#duplicates-summary")
    assert page.locator(".dup-group").count() == len(
        json.loads(urllib.request.urlopen(f"{server}/api/duplicates").read())["groups"]
    )

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
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    _screenshot(page, tmp_path, "report")
