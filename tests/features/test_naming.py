"""One way to name a track: what tables print (path relative to the library folder, id prefix) names it back,
in the library and in every command; an ambiguous or too-short name lists the candidates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from factories import run_cli

from embedtool.errors import InputError
from embedtool.features.naming import MIN_PREFIX, display_name, find_track, library_roots, relative_path
from embedtool.workspace import Workspace

ROOT = "/music"
TRACKS = [
    {"track_id": "615ff110aa" + "0" * 22, "path": "/music/fantasy/sad.ogg"},
    {"track_id": "615ff2b0bb" + "0" * 22, "path": "/music/drama/sad.ogg"},
    {"track_id": "9c0ffee000" + "0" * 22, "path": "/music/drama/happy one.flac"},
    {"track_id": "12345678ab" + "0" * 22, "path": "/elsewhere/x/loose.wav"},
]


def test_what_a_table_prints_names_the_track_back() -> None:
    for track in TRACKS:
        shown_path, shown_id = display_name(track, [ROOT]).rsplit(" ", 1)
        assert find_track(TRACKS, shown_path, [ROOT]) is track
        assert find_track(TRACKS, shown_id, [ROOT]) is track


def test_paths_are_shown_relative_to_the_deepest_library_folder() -> None:
    assert relative_path("/music/drama/happy one.flac", ["/music", "/music/drama"]) == "happy one.flac"
    assert relative_path("/music/drama/sad.ogg", ["/music"]) == "drama/sad.ogg"
    assert relative_path("/elsewhere/x/loose.wav", ["/music"]) == "x/loose.wav"  # no folder holds it
    assert relative_path("/musicals/a.wav", ["/music"]) == "musicals/a.wav"  # a sibling is not under /music


def test_ids_paths_and_path_ends() -> None:
    assert find_track(TRACKS, TRACKS[2]["track_id"]) is TRACKS[2]
    assert find_track(TRACKS, "/music/drama/happy one.flac") is TRACKS[2]
    assert find_track(TRACKS, "happy one.flac") is TRACKS[2]  # a unique end of a path
    assert find_track(TRACKS, "9C0FFEE") is TRACKS[2]  # ids are hex: case does not matter
    assert find_track(TRACKS, "ama/sad.ogg") is None  # ends only at a folder boundary
    assert find_track(TRACKS, "nothing.wav") is None


def test_an_ambiguous_name_lists_the_candidates() -> None:
    with pytest.raises(InputError, match=r"'sad.ogg' names 2 tracks .*fantasy/sad.ogg 615ff110.*drama/sad.ogg 615ff2b"):
        find_track(TRACKS, "sad.ogg", [ROOT])
    with pytest.raises(InputError, match=r"'615ff' is too short .* 6\+ characters .*2 track id"):
        find_track(TRACKS, "615ff", [ROOT])
    assert find_track(TRACKS, "615ff1"[:MIN_PREFIX], [ROOT]) is TRACKS[0]  # 6 characters are enough


def test_names_relative_to_the_current_folder_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracks = [
        {"track_id": "a" * 32, "path": str(tmp_path / "lib" / "a" / "x.wav")},
        {"track_id": "b" * 32, "path": str(tmp_path / "lib" / "b" / "x.wav")},
    ]
    (tmp_path / "lib").mkdir()
    monkeypatch.chdir(tmp_path / "lib")
    assert find_track(tracks, "b/x.wav") is tracks[1]
    assert find_track(tracks, "./a/x.wav") is tracks[0]


# --- the command line, on the session's trained workspace -------------------------------------------------------


def _shown_names(output: str) -> list[tuple[str, str]]:
    """(relative path, id prefix) of each row of a neighbours table."""
    return re.findall(r"│ \d+\s+│ (\S+/\S+) ([0-9a-f]{8})\s+│", output)


def test_a_name_the_neighbours_table_prints_is_accepted_back(
    trained_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    roots = library_roots(trained_workspace.features)
    assert roots and all(Path(r).is_absolute() for r in roots)
    first = run_cli("-w", trained_workspace.root, "neighbours", "tone_low/tone_low_0.wav", "-k", "3")
    assert first.exit_code == 0, first.output
    shown = _shown_names(first.output)
    assert len(shown) == 3, first.output
    for rel, prefix in shown:
        by_path = run_cli("-w", trained_workspace.root, "neighbours", rel, "--json")
        by_id = run_cli("-w", trained_workspace.root, "neighbours", prefix, "--json")
        assert by_path.exit_code == 0 and by_id.exit_code == 0, (by_path.output, by_id.output)
        a, b = json.loads(by_path.stdout)["query"], json.loads(by_id.stdout)["query"]
        assert a["library_track"] == b["library_track"] and a["library_track"].startswith(prefix)


def test_a_too_short_prefix_is_an_error_listing_candidates(trained_workspace: Workspace) -> None:
    from embedtool.features.store import FeatureStore

    tid = FeatureStore(trained_workspace.features).tracks[0]["track_id"]
    result = run_cli("-w", trained_workspace.root, "neighbours", tid[:3])
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert "too short to name a track" in text and tid[:8] in text


def test_a_file_reached_through_a_symlinked_folder_is_the_library_track(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    real = tmp_path / "music" / "song.wav"
    real.write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "music")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "song.wav").write_bytes(b"x")  # the same name, another file
    tracks = [{"track_id": "a" * 32, "path": str(real)}, {"track_id": "b" * 32, "path": "/nowhere/song.wav"}]
    assert find_track(tracks, str(tmp_path / "link" / "song.wav")) is tracks[0]
    assert find_track(tracks, str(tmp_path / "other" / "song.wav")) is None
