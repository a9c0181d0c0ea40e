"""`embedtool serve`'s API through FastAPI's test client, on the session's small trained workspace (with clusters,
a classifier and a report: ``served_workspace``)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from factories import flat, run_cli, write_corrupt, write_signal
from fastapi.testclient import TestClient  # the serve extra is part of the dev extra: missing is a failure

from embedtool.serve.app import create_app
from embedtool.workspace import Workspace

BASE = "http://127.0.0.1:8000"  # the Host the server answers to (its Host allow-list refuses "testserver")


def local(app, **kwargs) -> TestClient:
    return TestClient(app, base_url=BASE, **kwargs)


@pytest.fixture(scope="module")
def client(served_workspace: Workspace) -> TestClient:
    return local(create_app(served_workspace, max_upload_bytes=2_000_000, max_upload_seconds=60))


@pytest.fixture(scope="module")
def tracks(client: TestClient) -> list[dict]:
    return client.get("/api/tracks", params={"limit": 200}).json()["tracks"]


def _excerpt(path: str, start_s: float, seconds: float) -> bytes:
    """``seconds`` of a library file from ``start_s``, as WAV bytes (what a user would upload)."""
    data, sr = sf.read(path, dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, data[int(start_s * sr) : int((start_s + seconds) * sr)], sr, format="WAV")
    return buf.getvalue()


def test_status_and_tracks(client: TestClient, tracks: list[dict]) -> None:
    status = client.get("/api/status").json()
    assert status["search"] and status["classify"] and status["clusters"] and status["report"]
    assert status["tracks"] == len(tracks) == 18
    first = tracks[0]
    found = client.get("/api/tracks", params={"q": first["name"]}).json()["tracks"]
    assert [t["track_id"] for t in found] == [first["track_id"]]
    by_prefix = client.get("/api/tracks", params={"q": first["track_id"][:10]}).json()["tracks"]
    assert by_prefix[0]["track_id"] == first["track_id"]
    label = first["label"]
    assert {t["label"] for t in client.get("/api/tracks", params={"q": f"{label}/"}).json()["tracks"]} == {label}
    assert client.get("/api/tracks", params={"q": "no-such-thing"}).json()["count"] == 0
    assert client.get(f"/api/tracks/{first['track_id']}").json()["path"] == first["path"]


def test_search_by_track_leaves_it_out_and_ranks_its_class_first(client: TestClient, tracks: list[dict]) -> None:
    query = tracks[0]
    answer = client.get("/api/search", params={"track": query["track_id"], "k": 5}).json()
    assert answer["mode"] == "similar" and answer["query"]["library_track"] == query["track_id"]
    matches = answer["matches"]
    assert len(matches) == 5 and query["track_id"] not in [m["track_id"] for m in matches]
    assert matches[0]["label"] == query["label"]
    assert [m["rank"] for m in matches] == [1, 2, 3, 4, 5]
    assert all(m["ref_end_s"] > m["ref_start_s"] >= 0 and m["name"] for m in matches)


@pytest.mark.parametrize("combine", ["rrf", "mean"])
def test_search_several_tracks_together(client: TestClient, tracks: list[dict], combine: str) -> None:
    from embedtool.query.searcher import Searcher
    from embedtool.query.seeds import more_like_these

    label = tracks[0]["label"]
    seeds = [t["track_id"] for t in tracks if t["label"] == label][:2]
    res = client.get("/api/search", params={"track": seeds, "k": 8, "combine": combine})
    assert res.status_code == 200, res.text
    answer = res.json()
    assert answer["mode"] == "similar" and answer["query"]["combine"] == combine
    assert [s["library_track"] for s in answer["query"]["seeds"]] == seeds
    assert all(s["name"] and "source" not in s for s in answer["query"]["seeds"])
    got = [m["track_id"] for m in answer["matches"]]
    assert len(got) == len(set(got)) == 8 and not set(got) & set(seeds)  # the seeds are left out
    assert all(m["name"] and m["duration_s"] for m in answer["matches"])
    library = client.app.state.library
    expected = more_like_these(library.searcher, seeds, k=8, combine=combine)
    assert isinstance(library.searcher, Searcher) and got == [m.track_id for m in expected.matches]


def test_several_tracks_default_and_refusals(client: TestClient, tracks: list[dict]) -> None:
    seeds = [tracks[0]["track_id"], tracks[1]["track_id"]]
    default = client.get("/api/search", params={"track": seeds}).json()
    assert default["query"]["combine"] == "mean" and len(default["matches"]) == 10
    one = client.get("/api/search", params={"track": seeds[:1], "combine": "rrf", "k": 3}).json()
    assert one["query"]["combine"] == "rrf" and len(one["matches"]) == 3  # one seed, combined, is fine
    res = client.get("/api/search", params={"track": seeds, "mode": "identify"})
    assert res.status_code == 422 and "similar mode only" in res.json()["error"]
    res = client.get("/api/search", params={"track": seeds, "combine": "median"})
    assert res.status_code == 422 and "combine" in res.json()["error"]
    res = client.get("/api/search", params={"track": [seeds[0], "0" * 32]})
    assert res.status_code == 404 and "0" * 32 in res.json()["error"]
    res = client.get("/api/search", params={"track": [seeds[0]] * 51})
    assert res.status_code == 422 and "At most 50 seeds" in res.json()["error"]


def test_identify_an_uploaded_excerpt(client: TestClient, tracks: list[dict]) -> None:
    target = tracks[4]
    wav = _excerpt(target["path"], 1.0, 2.0)
    res = client.post("/api/search", params={"mode": "identify"}, files={"file": ("clip.wav", wav, "audio/wav")})
    assert res.status_code == 200, res.text
    answer = res.json()
    assert answer["mode"] == "identify" and answer["matches"][0]["track_id"] == target["track_id"]
    best = answer["matches"][0]
    # the matched range overlaps where the excerpt was cut (1-3 s; the tiny test model aligns only roughly)
    assert best["ref_start_s"] < 3.0 and best["ref_end_s"] > 1.0 and best["ref_end_s"] <= target["duration_s"] + 0.01
    assert "source" not in answer["query"]  # the temporary file's name is not reported


def test_similar_to_an_upload_keeps_the_library_copy_out(client: TestClient, tracks: list[dict]) -> None:
    target = tracks[7]
    data = Path(target["path"]).read_bytes()  # the very file: recognised as the library track and left out
    answer = client.post("/api/search", files={"file": ("same.wav", data)}).json()
    assert answer["query"]["library_track"] == target["track_id"]
    assert target["track_id"] not in [m["track_id"] for m in answer["matches"]]


def test_uploads_leave_no_temporary_files(client: TestClient, tracks: list[dict], tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    wav = _excerpt(tracks[0]["path"], 0.0, 2.0)
    assert client.post("/api/search", files={"file": ("a.wav", wav)}).status_code == 200
    assert client.post("/api/search", files={"file": ("b.wav", b"not audio at all")}).status_code == 422
    assert list(tmp_path.iterdir()) == []


def test_bad_uploads_are_4xx_with_a_message(client: TestClient, tmp_path: Path) -> None:
    corrupt = write_corrupt(tmp_path / "corrupt.mp3").read_bytes()
    res = client.post("/api/search", files={"file": ("corrupt.mp3", corrupt)})
    assert res.status_code == 422 and "not audio the server can read" in res.json()["error"]
    assert str(tmp_path) not in res.text and "embedtool-upload" not in res.text
    empty = client.post("/api/search", files={"file": ("empty.wav", b"")})
    assert empty.status_code == 422 and "empty" in empty.json()["error"]
    short = write_signal(tmp_path / "short.wav", np.zeros(200, dtype=np.float32)).read_bytes()
    res = client.post("/api/search", files={"file": ("short.wav", short)})
    assert res.status_code == 422 and "shortest usable excerpt" in res.json()["error"]
    res = client.post("/api/search")
    assert res.status_code == 422 and "file" in res.json()["error"]
    res = client.get("/api/search", params={"track": "  "})
    assert res.status_code == 422 and "Empty query" in res.json()["error"]
    res = client.get("/api/search", params={"track": "0" * 32, "mode": "nearest"})
    assert res.status_code == 422 and "mode" in res.json()["error"]


def test_oversize_uploads_are_refused_with_413(client: TestClient, tmp_path: Path) -> None:
    big = b"\0" * 2_200_000  # over the 2 MB limit of this client's app
    res = client.post("/api/search", files={"file": ("big.wav", big)})
    assert res.status_code == 413 and "limit" in res.json()["error"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(40):
            yield b"\0" * 100_000

    res = client.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert res.status_code == 413
    long = write_signal(tmp_path / "long.flac", np.zeros(22050 * 70, dtype=np.float32)).read_bytes()
    assert len(long) < 2_000_000  # small in bytes, long in time: flac packs silence
    res = client.post("/api/search", files={"file": ("long.flac", long)})
    assert res.status_code == 413 and "60 s" in res.json()["error"]


def test_audio_range_requests(client: TestClient, tracks: list[dict]) -> None:
    track = tracks[2]
    data = Path(track["path"]).read_bytes()
    whole = client.get(f"/api/audio/{track['track_id']}")
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/audio/{track['track_id']}", headers={"Range": "bytes=1000-4999"})
    assert part.status_code == 206 and part.content == data[1000:5000]
    assert part.headers["content-range"] == f"bytes 1000-4999/{len(data)}"
    tail = client.get(f"/api/audio/{track['track_id']}", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == data[-100:]
    beyond = client.get(f"/api/audio/{track['track_id']}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "0123456789abcdef", "features"]
)
def test_audio_serves_library_tracks_by_id_only(client: TestClient, bad: str) -> None:
    res = client.get(f"/api/audio/{bad}")
    assert res.status_code == 404
    assert client.get("/api/search", params={"track": bad}).status_code == 404
    assert "root:" not in res.text


def test_a_symlink_out_of_the_library_plays_its_own_file_and_nothing_else(
    served_workspace: Workspace, tmp_path: Path
) -> None:
    """A library file that is a symlink to a file elsewhere was extracted from that file's bytes: it plays. A
    symlink swapped afterwards to another file (a secret) is refused, with a message, not served."""
    from factories import copy_workspace

    from embedtool.features.store import FeatureStore

    ws = copy_workspace(served_workspace, tmp_path / "ws")
    track = FeatureStore(ws.features).tracks[0]
    original = Path(track["path"])
    saved = tmp_path / "saved.wav"
    shutil.move(original, saved)
    try:
        original.symlink_to(saved)  # as linked at extract time: the same bytes, outside the library folder
        app_client = local(create_app(ws))
        res = app_client.get(f"/api/audio/{track['track_id']}")
        assert res.status_code == 200 and res.content == saved.read_bytes()
        secret = tmp_path / "secret.wav"
        secret.write_bytes(saved.read_bytes()[:-4] + b"\x01\x02\x03\x04")
        original.unlink()
        original.symlink_to(secret)  # swapped afterwards
        res = app_client.get(f"/api/audio/{track['track_id']}")
        assert res.status_code == 404 and "not the one extracted" in res.json()["error"]
        assert b"RIFF" not in res.content
    finally:
        original.unlink()
        shutil.move(saved, original)


def test_transcoded_audio_answers_ranges_with_the_same_bytes(tmp_path: Path) -> None:
    from embedtool.serve.media import WavTranscode, parse_range

    sr = 22050
    t = np.arange(sr * 3) / sr
    source = write_signal(tmp_path / "x.aiff", 0.3 * np.sin(2 * np.pi * 330 * t), sr)  # not playable in a browser
    wav = WavTranscode.open(source)
    whole = wav.read(0, wav.size)
    decoded, rate = sf.read(io.BytesIO(whole), dtype="int16")
    expected, _ = sf.read(source, dtype="int16")
    assert rate == sr and np.array_equal(decoded, expected)
    start, end = parse_range("bytes=50001-90000", wav.size)
    assert wav.read(start, end) == whole[50001:90001]
    assert wav.read(10, 60) == whole[10:60]  # across the header's end


def test_transcoded_audio_through_the_api(served_workspace: Workspace, tmp_path: Path) -> None:
    """A library track in a format browsers cannot play is served as WAV, range by range."""
    from factories import copy_workspace

    from embedtool.features.store import FeatureStore

    ws = copy_workspace(served_workspace, tmp_path / "ws")
    track = FeatureStore(ws.features).tracks[0]
    aiff = Path(track["path"]).with_suffix(".aiff")
    data, sr = sf.read(track["path"], dtype="float32")
    write_signal(aiff, data, sr)
    app = create_app(ws)
    app.state.library.track(track["track_id"])["path"] = str(aiff)  # as if extracted from the aiff
    try:
        res = local(app).get(f"/api/audio/{track['track_id']}", headers={"Range": "bytes=0-"})
        assert res.status_code == 206 and res.headers["content-type"] == "audio/wav"
        decoded, rate = sf.read(io.BytesIO(res.content), dtype="float32")
        assert rate == sr and len(decoded) == len(data) and np.abs(decoded - data).max() < 1e-3
    finally:
        aiff.unlink()


def test_map_and_clusters(client: TestClient, tracks: list[dict]) -> None:
    m = client.get("/api/map").json()
    assert len(m["points"]) == len(tracks) and m["has_clusters"]
    ids = {t["track_id"] for t in tracks}
    assert {p["track_id"] for p in m["points"]} == ids
    assert all(np.isfinite([p["x"], p["y"]]).all() and p["cluster"] in (0, 1, 2) for p in m["points"])
    c = client.get("/api/clusters").json()
    assert c["k"] == 3 and sum(c["sizes"]) == len(tracks)
    for entries in c["exemplars"].values():
        assert entries and all(e["track_id"] in ids and e["name"] and e["end_s"] > e["start_s"] for e in entries)


def test_classify_an_upload(client: TestClient, tracks: list[dict]) -> None:
    target = tracks[10]
    res = client.post("/api/classify", files={"file": ("x.wav", _excerpt(target["path"], 0.0, 3.0))})
    assert res.status_code == 200, res.text
    answer = res.json()
    assert answer["label"] == target["label"]
    assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-4


def test_report_page_and_its_figures(client: TestClient) -> None:
    page = client.get("/report/")
    assert page.status_code == 200 and "<table>" in page.text and 'src="map.png"' in page.text
    figure = client.get("/report/map.png")
    assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")
    assert client.get("/report/..%2Fmeta.json").status_code == 404
    assert client.get("/report/nothing.png").status_code == 404


def test_page_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<script" in page.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/tracks", "/api/map", "/api/clusters", "/api/classify"} <= set(paths)


def test_a_workspace_without_an_index_says_which_command_to_run(trained_workspace: Workspace, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(trained_workspace.features, ws.features)
    c = local(create_app(ws))
    assert c.get("/api/tracks").json()["count"] == 18  # the library is listed from its features
    track_id = c.get("/api/tracks").json()["tracks"][0]["track_id"]
    res = c.get("/api/search", params={"track": track_id})
    assert res.status_code == 409 and "embedtool index" in res.json()["error"]
    assert c.get("/api/clusters").status_code == 409
    assert c.get("/api/map").status_code == 409
    assert c.get("/report/").status_code == 404 and "embedtool evaluate" in c.get("/report/").json()["error"]
    assert c.get(f"/api/audio/{track_id}").status_code == 200


def test_a_token_is_required_when_set(served_workspace: Workspace) -> None:
    c = local(create_app(served_workspace, token="s3cret"))
    assert c.get("/api/tracks").status_code == 401
    assert c.get("/api/tracks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/tracks", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/", params={"token": "s3cret"}).status_code == 200  # sets the cookie the page's audio uses
    assert c.get("/api/tracks").status_code == 200


def test_the_command_names_the_extra_when_the_web_packages_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as on an install without embedtool[serve]
    res = run_cli("serve")
    assert res.exit_code == 2 and "pip install 'embedtool[serve]'" in flat(res.output)


def test_envelope_for_the_timelines(client: TestClient, tracks: list[dict]) -> None:
    track = tracks[5]
    e = client.get(f"/api/envelope/{track['track_id']}", params={"bins": 50}).json()
    assert len(e["levels"]) == 50 and all(0.0 <= v <= 1.0 for v in e["levels"]) and max(e["levels"]) == 1.0
    assert e["duration_s"] == track["duration_s"]
    assert client.get("/api/envelope/nope").status_code == 404
    assert client.get(f"/api/envelope/{track['track_id']}", params={"bins": 5}).status_code == 422
