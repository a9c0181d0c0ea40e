"""Several seeds, one answer (`neighbours A B C --combine`, ``embedtool.query.seeds``), ``--exclude-seeds`` and the
M3U playlist output, on the session's small trained workspace (3 generated classes x 6 tracks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from factories import run_cli

from embedtool.errors import ConfigError, InputError
from embedtool.query.searcher import Searcher
from embedtool.query.seeds import COMBINE_METHODS, leave_out, m3u, more_like_these, seed_tracks
from embedtool.workspace import Workspace


@pytest.fixture(scope="module")
def searcher(trained_workspace: Workspace) -> Searcher:
    return Searcher.open(trained_workspace)


def _by_label(searcher: Searcher) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for t in searcher.tables.tracks:
        out.setdefault(t["label"], []).append(t)
    return out


def _seeds(searcher: Searcher, n: int = 3) -> tuple[str, list[str]]:
    label, tracks = sorted(_by_label(searcher).items())[0]
    return label, [t["track_id"] for t in tracks[:n]]


def parse_m3u(text: str) -> list[tuple[int, str, str]]:
    """(seconds, name, path) per entry of an extended M3U playlist; checks its header and pairing."""
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    entries, info = [], None
    for line in lines[1:]:
        if line.startswith("#EXTINF:"):
            seconds, name = line[len("#EXTINF:") :].split(",", 1)
            info = (int(seconds), name)
        elif line.startswith("#") or not line.strip():
            continue
        else:
            assert info is not None, f"a path without #EXTINF before it: {line}"
            entries.append((*info, line))
            info = None
    return entries


# --- the library function ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", COMBINE_METHODS)
def test_combined_answer_is_k_distinct_tracks_without_the_seeds(searcher: Searcher, method: str) -> None:
    label, seeds = _seeds(searcher)
    result = more_like_these(searcher, seeds, k=10, combine=method)
    got = [m.track_id for m in result.matches]
    assert len(got) == len(set(got)) == 10 and not set(got) & set(seeds)
    assert [m.rank for m in result.matches] == list(range(1, 11))
    assert result.mode == "similar" and result.query.combine == method
    assert [s["library_track"] for s in result.query.seeds] == seeds
    assert sorted(result.query.excluded_tracks) == sorted(seeds)
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)
    # the three left in the seeds' class (6 tracks, 3 of them seeds) come first on the tiny model
    assert {m.label for m in result.matches[:3]} == {label}
    # every track besides the seeds, when k asks for them all
    everything = more_like_these(searcher, seeds, k=100, combine=method)
    assert len({m.track_id for m in everything.matches}) == len(searcher.tables.tracks) - 3


def test_the_methods_differ_and_rrf_scores_are_reciprocal_ranks(searcher: Searcher) -> None:
    _, seeds = _seeds(searcher, 2)
    rrf = more_like_these(searcher, seeds, k=10, combine="rrf")
    # a track first for both seeds scores 2/61 at most; any track at least 1/(60 + depth)
    assert all(1 / (60 + 50) <= m.score <= 2 / 61 + 1e-6 for m in rrf.matches)
    mean = more_like_these(searcher, seeds, k=10, combine="mean")
    assert all(0 < m.score <= 1 for m in mean.matches) and mean.matches[0].score > rrf.matches[0].score


def test_one_seed_combined_by_rrf_is_its_own_answer(searcher: Searcher) -> None:
    seed = searcher.tables.tracks[4]["track_id"]
    alone = searcher.query_track(seed, k=10)
    combined = more_like_these(searcher, [seed], k=10, combine="rrf")
    assert [m.track_id for m in combined.matches] == [m.track_id for m in alone.matches]


def test_seeds_kept_when_asked_and_seeds_may_be_files(searcher: Searcher, tmp_path: Path) -> None:
    _, seeds = _seeds(searcher)
    kept = more_like_these(searcher, seeds, k=5, combine="mean", exclude_seeds=False)
    assert set(seeds) <= {m.track_id for m in kept.matches}  # nearest the seeds' mean are the seeds
    # a copy of a library file elsewhere is that track (by its content): left out like a track given by id
    copy = tmp_path / "copy.wav"
    shutil.copy(searcher.tables.tracks[0]["path"], copy)
    result = more_like_these(searcher, [str(copy), seeds[1]], k=10)
    assert result.query.seeds[0]["library_track"] == searcher.tables.tracks[0]["track_id"]
    assert not {searcher.tables.tracks[0]["track_id"], seeds[1]} & {m.track_id for m in result.matches}
    assert seed_tracks(searcher, [str(copy), seeds[1][:8]]) == {searcher.tables.tracks[0]["track_id"], seeds[1]}


def test_bad_seeds_and_methods_are_refused(searcher: Searcher, tmp_path: Path) -> None:
    _, seeds = _seeds(searcher)
    with pytest.raises(ConfigError, match="combine must be one of mean, rrf"):
        more_like_these(searcher, seeds, combine="median")
    with pytest.raises(InputError, match="neither an audio file nor a library track"):
        more_like_these(searcher, [seeds[0], str(tmp_path / "nope.wav")])
    with pytest.raises(InputError, match="No seed"):
        more_like_these(searcher, [])


def test_leave_out_and_the_playlist(searcher: Searcher) -> None:
    _, seeds = _seeds(searcher)
    answer = searcher.query_track(seeds[0], k=10 + 3)
    trimmed = leave_out(answer, set(seeds), 10)
    assert len(trimmed.matches) == 10 and not set(seeds) & {m.track_id for m in trimmed.matches}
    assert [m.rank for m in trimmed.matches] == list(range(1, 11))
    entries = parse_m3u(m3u(searcher, [("first", trimmed), (None, answer)]))
    assert [p for _, _, p in entries] == [m.path for m in trimmed.matches + answer.matches]
    durations = {t["track_id"]: t["duration_s"] for t in searcher.tables.tracks}
    first = trimmed.matches[0]
    assert entries[0][0] == round(durations[first.track_id]) == 4 and entries[0][1] == Path(first.path).stem


# --- the command line ---------------------------------------------------------------------------------------------
def _cli_json(ws: Workspace, *args: str) -> dict:
    res = run_cli("-w", ws.root, "neighbours", *args, "--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("method", COMBINE_METHODS)
def test_cli_combine(trained_workspace: Workspace, searcher: Searcher, method: str) -> None:
    _, seeds = _seeds(searcher)
    answer = _cli_json(trained_workspace, *seeds, "--combine-by", method, "-k", "6")
    expected = more_like_these(searcher, seeds, k=6, combine=method)
    assert [m["track_id"] for m in answer["matches"]] == [m.track_id for m in expected.matches]
    assert answer["query"]["given"] == seeds and answer["query"]["combine"] == method
    default = _cli_json(trained_workspace, *seeds, "--combine", "-k", "6")
    assert default["query"]["combine"] == "mean"  # the measured default (docs/benchmarks.md, "Several seeds")
    csv = run_cli("-w", trained_workspace.root, "neighbours", *seeds, "--combine", "-k", "6", "--format", "csv")
    rows = csv.stdout.splitlines()
    assert csv.exit_code == 0 and len(rows) == 7 and rows[1].startswith(" + ".join(seeds) + ",similar,1,")
    table = run_cli("-w", trained_workspace.root, "neighbours", *seeds, "--combine", "-k", "3")
    assert table.exit_code == 0 and "3 seeds together (mean)" in table.stdout


def test_cli_combine_with_one_seed_and_keeping_the_seeds(trained_workspace: Workspace, searcher: Searcher) -> None:
    _, seeds = _seeds(searcher)
    one = _cli_json(trained_workspace, seeds[0], "--combine", "-k", "4")
    assert len(one["matches"]) == 4 and seeds[0] not in [m["track_id"] for m in one["matches"]]
    kept = _cli_json(trained_workspace, *seeds, "--combine-by", "mean", "--include-self", "-k", "5")
    assert set(seeds) <= {m["track_id"] for m in kept["matches"]}


def test_cli_exclude_seeds_for_separate_answers(trained_workspace: Workspace, searcher: Searcher) -> None:
    _, seeds = _seeds(searcher)
    plain = _cli_json(trained_workspace, *seeds, "-k", "5")
    assert any(set(seeds) & {m["track_id"] for m in a["matches"]} for a in plain)  # same class: they find each other
    answers = _cli_json(trained_workspace, *seeds, "--exclude-seeds", "-k", "5")
    assert len(answers) == 3
    for a in answers:
        assert len(a["matches"]) == 5 and not set(seeds) & {m["track_id"] for m in a["matches"]}
    # a query naming nothing fails in its place (exit 1); the others are answered without the seeds
    res = run_cli("-w", trained_workspace.root, "neighbours", *seeds, "nothing-here", "--exclude-seeds", "-f", "json")
    answered = json.loads(res.stdout)
    assert res.exit_code == 1 and "error" in answered[3] and len(answered) == 4
    assert all(not set(seeds) & {m["track_id"] for m in a["matches"]} for a in answered[:3])


def test_cli_m3u_playlist(trained_workspace: Workspace, searcher: Searcher) -> None:
    _, seeds = _seeds(searcher)
    res = run_cli("-w", trained_workspace.root, "neighbours", *seeds, "--combine", "-k", "5", "--format", "m3u")
    assert res.exit_code == 0, res.output
    entries = parse_m3u(res.stdout)
    expected = more_like_these(searcher, seeds, k=5)
    assert [p for _, _, p in entries] == [m.path for m in expected.matches]
    assert all(Path(p).is_absolute() and Path(p).is_file() and s == 4 for s, _, p in entries)
    separate = run_cli("-w", trained_workspace.root, "neighbours", seeds[0], seeds[1], "-k", "2", "-f", "m3u")
    assert separate.exit_code == 0 and len(parse_m3u(separate.stdout)) == 4
    assert separate.stdout.count("# neighbours of ") == 2


def test_cli_errors(trained_workspace: Workspace, searcher: Searcher) -> None:
    _, seeds = _seeds(searcher)
    unknown = run_cli("-w", trained_workspace.root, "neighbours", *seeds, "--combine-by", "median")
    assert unknown.exit_code == 2 and "median" in unknown.output
    identify = run_cli("-w", trained_workspace.root, "neighbours", *seeds, "--combine", "--mode", "identify")
    assert identify.exit_code == 2 and "similar" in identify.output
    missing = run_cli("-w", trained_workspace.root, "neighbours", seeds[0], "no-such-track", "--combine")
    assert missing.exit_code == 1 and "no-such-track" in missing.output
