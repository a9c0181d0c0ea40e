"""`embedtool serve`'s hardening through FastAPI's test client: the Host allow-list, the token's
exchange for a cookie, the Origin check, security headers, JSON errors everywhere, /docs offline, the upload's
duration enforced while decoding, streamed transcoding, escaped report labels, short tracks, the command's
options."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from factories import flat, run_cli, write_signal
from fastapi.testclient import TestClient

from embedtool.errors import ConfigError
from embedtool.serve.app import create_app
from embedtool.serve.guard import TOKEN_COOKIE, allowed_names, host_name
from embedtool.workspace import Workspace

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def app(served_workspace: Workspace):
    return create_app(served_workspace, max_upload_bytes=2_000_000, max_upload_seconds=60)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, base_url=BASE)


@pytest.fixture(scope="module")
def tracks(client: TestClient) -> list[dict]:
    return client.get("/api/tracks", params={"limit": 200}).json()["tracks"]


# --- errors, /docs, headers -----------------------------------------------------------------------------------
def test_every_error_is_json_with_an_error_key(client: TestClient) -> None:
    for res in (client.get("/no/such/route"), client.get("/api/nothing"), client.delete("/api/tracks")):
        assert res.status_code in (404, 405) and set(res.json()) == {"error"}, res.text
    assert "/no/such/route" in client.get("/no/such/route").json()["error"]
    assert client.get("/api/tracks/zzz").json() == {"error": "No library track with id 'zzz'."}


def test_refused_ranges_are_json_too(client: TestClient, tracks: list[dict]) -> None:
    audio = f"/api/audio/{tracks[0]['track_id']}"
    size = len(Path(tracks[0]["path"]).read_bytes())
    beyond = client.get(audio, headers={"Range": f"bytes={size + 5}-"})
    assert beyond.status_code == 416 and "outside" in beyond.json()["error"]
    assert beyond.headers["content-range"] == f"bytes */{size}"
    bad = client.get(audio, headers={"Range": "pages=1-2"})
    assert bad.status_code == 400 and "Malformed Range" in bad.json()["error"]


def test_docs_work_offline(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/search" in page.text and "/openapi.json" in page.text
    assert "<script" not in page.text and "cdn" not in page.text.lower() and "https://" not in page.text
    assert client.get("/redoc").status_code == 404


@pytest.mark.parametrize("path", ["/", "/api/status", "/static/app.js", "/report/", "/no-such", "/docs"])
def test_security_headers_on_every_answer(client: TestClient, path: str) -> None:
    h = client.get(path).headers
    assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
    csp = h["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_the_page_has_no_inline_script_or_style(client: TestClient) -> None:
    import re

    for path in ("/", "/report/", "/docs"):
        text = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", text) and "<style" not in text and " style=" not in text


# --- Host, Origin, token ---------------------------------------------------------------------------------------
def test_a_foreign_host_header_is_refused(app, client: TestClient) -> None:
    res = client.get("/api/status", headers={"Host": "evil.example"})
    assert res.status_code == 400 and "evil.example" in res.json()["error"]
    assert res.headers["x-frame-options"] == "DENY"
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
    assert TestClient(app).get("/api/status").status_code == 400  # "testserver" is no name of this server


def test_allowed_host_names() -> None:
    assert host_name("[::1]:8000") == "::1" and host_name("Box.lan:80") == "box.lan" and host_name("::1") == "::1"
    names = allowed_names("192.168.1.5", ["box.lan", "Other:8080"])
    assert {"localhost", "127.0.0.1", "::1", "192.168.1.5", "box.lan", "other"} <= names
    assert "0.0.0.0" not in allowed_names("0.0.0.0")


def test_cross_site_posts_are_refused(client: TestClient, tracks: list[dict]) -> None:
    wav = Path(tracks[0]["path"]).read_bytes()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://127.0.0.1:9999"}):  # fmt: skip
        res = client.post("/api/search", files={"file": ("a.wav", wav)}, headers=headers)
        assert res.status_code == 403 and "Cross-site" in res.json()["error"], headers
    same = client.post("/api/search", files={"file": ("a.wav", wav)}, headers={"Origin": BASE})
    assert same.status_code == 200
    assert client.post("/api/search", files={"file": ("a.wav", wav)}).status_code == 200  # curl sends no Origin


def test_the_token_in_the_address_is_exchanged_for_a_cookie(served_workspace: Workspace) -> None:
    c = TestClient(create_app(served_workspace, token="s3cret"), base_url=BASE, follow_redirects=False)
    assert c.get("/api/status").status_code == 401 and set(c.get("/").json()) == {"error"}
    res = c.get("/", params={"token": "s3cret", "track": "abc", "mode": "identify"})
    assert res.status_code == 303 and res.headers["location"] == "/?track=abc&mode=identify"  # token stripped
    cookie = res.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "s3cret" not in cookie  # the cookie holds a digest, not the token
    assert c.get("/api/status").status_code == 200  # the cookie now stands for the token
    c.cookies.clear()
    assert c.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/status", params={"token": "wrong"}).status_code == 401
    assert c.get("/api/status", headers={"Cookie": f"{TOKEN_COOKIE}=s3cret"}).status_code == 401
    with pytest.raises(ConfigError, match="empty"):
        create_app(served_workspace, token="  ")


# --- the command's options -------------------------------------------------------------------------------------
@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What `embedtool serve` would start, instead of starting it."""
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    return calls


def test_serve_validates_the_port_before_anything(started: list[dict], served_workspace: Workspace) -> None:
    for port in ("99999", "0", "-1"):
        res = run_cli("-w", served_workspace.root, "serve", "--port", port)
        assert res.exit_code == 2 and "65535" in flat(res.output) and "http://" not in res.output, res.output
        assert len([line for line in res.output.splitlines() if line.strip()]) == 1
    assert not started


def test_serve_reads_the_token_from_a_file_or_the_environment(
    started: list[dict], served_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = run_cli("-w", served_workspace.root, "serve", "--token", "")
    assert empty.exit_code == 2 and "token is empty" in flat(empty.output)
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    res = run_cli("-w", served_workspace.root, "serve", "--token-file", secret, "--allow-host", "box.lan")
    assert res.exit_code == 0, res.output
    c = TestClient(started[-1]["app"], base_url="http://box.lan:8000")
    assert c.get("/api/status").status_code == 401
    assert c.get("/api/status", headers={"Authorization": "Bearer from-a-file"}).status_code == 200
    assert "?token=from-a-file" in flat(res.output)
    secret.write_text("")
    assert run_cli("-w", served_workspace.root, "serve", "--token-file", secret).exit_code == 2
    monkeypatch.setenv("EMBEDTOOL_SERVE_TOKEN", "from-env")
    assert run_cli("-w", served_workspace.root, "serve").exit_code == 0
    c = TestClient(started[-1]["app"], base_url=BASE)
    assert c.get("/api/status", headers={"Authorization": "Bearer from-env"}).status_code == 200
    assert c.get("/api/status", headers={"Host": "box.lan"}).status_code == 400  # not allowed this time


# --- uploads ---------------------------------------------------------------------------------------------------
def _webm_without_duration(seconds: float) -> bytes:
    """Opus in WebM as a browser's MediaRecorder writes it: streamed, so the container declares no duration."""
    import av

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            self.data += bytes(b)
            return len(b)

    out = Unseekable()
    tone = (0.1 * np.sin(np.arange(960) * 2 * np.pi * 440 / 48000)).astype(np.float32)[None, :]
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        for i in range(int(seconds * 48000) // 960):
            frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            frame.rate, frame.pts = 48000, i * 960
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return bytes(out.data)


def test_upload_duration_is_enforced_while_decoding(client: TestClient) -> None:

    long = _webm_without_duration(75.0)
    assert len(long) < 2_000_000
    res = client.post("/api/search", files={"file": ("recording.webm", long, "audio/webm")})
    assert res.status_code == 413 and "longer than 60 s" in res.json()["error"], res.text
    short = _webm_without_duration(3.0)
    res = client.post("/api/search", files={"file": ("recording.webm", short, "audio/webm")})
    assert res.status_code == 200, res.text


def test_unreadable_uploads_get_a_plain_message(client: TestClient) -> None:
    res = client.post("/api/search", files={"file": ("x.mp3", b"\x00garbage" * 200)})
    message = res.json()["error"]
    assert res.status_code == 422 and message.startswith("The upload is not audio the server can read")
    assert "soundfile" not in message and "PyAV" not in message and "upload-" not in message


# --- search ----------------------------------------------------------------------------------------------------
def test_k_means_k_through_the_api(client: TestClient, tracks: list[dict]) -> None:
    answer = client.get("/api/search", params={"track": tracks[0]["track_id"], "k": 100}).json()
    ids = [m["track_id"] for m in answer["matches"]]
    assert len(ids) == len(tracks) - 1 == len(set(ids))  # every other track, once
    assert all(m["duration_s"] > 0 for m in answer["matches"])  # for the page's timelines


def test_a_track_shorter_than_a_query_is_searched_padded(served_workspace: Workspace, tracks: list[dict]) -> None:
    from dataclasses import replace

    app = create_app(served_workspace)
    searcher = app.state.library.searcher
    searcher.options = replace(searcher.options, min_query_seconds=1000.0)  # every track is "too short" now
    res = TestClient(app, base_url=BASE).get("/api/search", params={"track": tracks[3]["track_id"], "k": 5})
    assert res.status_code == 200, res.text
    answer = res.json()
    assert "padded with silence" in answer["note"] and len(answer["matches"]) == 5
    assert tracks[3]["track_id"] not in [m["track_id"] for m in answer["matches"]]
    assert answer["query"]["library_track"] == tracks[3]["track_id"]


def test_export_columns_are_those_of_neighbours(client: TestClient) -> None:
    from embedtool.cli.neighbours import COLUMNS

    assert client.get("/api/status").json()["export_columns"] == list(COLUMNS)


# --- audio -----------------------------------------------------------------------------------------------------
def test_transcoded_audio_streams_in_bounded_pieces(tmp_path: Path) -> None:
    """A whole transcoded file (`Range: bytes=0-`) is made piece by piece: memory stays at a piece (measured:
    bench/bench_serve.py --aiff-minutes 10)."""
    from embedtool.serve.media import CHUNK_BYTES, WavTranscode

    sr = 44100
    t = np.arange(sr * 60) / sr
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], 1)
    source = write_signal(tmp_path / "long.aiff", stereo.astype(np.float32), sr)
    wav = WavTranscode.open(source)
    assert wav.size > 10_000_000
    tracemalloc.start()
    total, pieces = 0, 0
    for piece in wav.stream(0, wav.size):
        total, pieces = total + len(piece), pieces + 1
        assert len(piece) <= CHUNK_BYTES + 64
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == wav.size and pieces > 20
    assert peak < 4 * CHUNK_BYTES + 2_000_000, peak  # a few pieces, not the 10 MB file
    whole = b"".join(wav.stream(0, wav.size))
    decoded, rate = sf.read(io.BytesIO(whole), dtype="int16")
    expected, _ = sf.read(source, dtype="int16")
    assert rate == sr and np.array_equal(decoded, expected)
    assert b"".join(wav.stream(1_000_001, 3_500_000)) == whole[1_000_001:3_500_000]


# --- the report ------------------------------------------------------------------------------------------------
def test_report_labels_are_text(tmp_path: Path) -> None:
    from embedtool.analysis.report import md_text
    from embedtool.serve.report import render_report

    hostile = ["![pic](http:evil.example?leak)", "a|b", "<b>bold</b>", "\u202egnp.exe", "*star* _u_ `c`"]
    lines = ["| label | n |", "|---|---|", *[f"| {md_text(label)} | 1 |" for label in hostile]]
    lines += ["", "![map](map.png) ![x](https://evil.example/x.png)"]
    (tmp_path / "report.md").write_text("\n".join(lines) + "\n")
    page = render_report(tmp_path)
    assert page.count("<tr>") == 1 + len(hostile) and page.count("<td>") == 2 * len(hostile)  # no split cells
    assert "<img" in page and page.count("<img") == 1 and 'src="map.png"' in page  # only the report's own figure
    assert "evil.example/x.png" in page and "<b>" not in page and "\u202e" not in page and "U+202E" in page
    assert "![pic](http:evil.example?leak)" in page.replace("&amp;", "&")  # shown as the text it is
