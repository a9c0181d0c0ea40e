"""kill -9 in the middle of a stage: the stage's earlier artefact is untouched, and running the stage again gives
what an uninterrupted run gives. (extract's own kill test, with resumption from flushed shards, is in
test_extract.py.)

A driver runs the stage in a subprocess; when the stage reports progress at the chosen step it writes a marker
and waits, and the test sends SIGKILL: no Python cleanup, no finally blocks, no lock release but the kernel's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from factories import copy_workspace, kill_9_when_marked

from embedtool import pipeline
from embedtool.analysis.options import ClusterOptions
from embedtool.embedding.options import EmbedOptions
from embedtool.indexing.options import IndexOptions
from embedtool.workspace import Workspace

DRIVER = """
import sys, time
from pathlib import Path
from embedtool import pipeline
from embedtool.analysis.options import ClusterOptions
from embedtool.embedding.options import EmbedOptions
from embedtool.indexing.options import IndexOptions
from embedtool.workspace import Workspace

stage, ws, marker, at = sys.argv[1], Workspace.at(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

def progress(name, done, total):
    if name.startswith(at) and done >= max(1, total // 2) and not marker.exists():
        marker.write_text(name)
        time.sleep(120)  # wait here to be killed

if stage == "embed":
    pipeline.embed(ws, EmbedOptions(device="cpu", full=True), progress)
elif stage == "index":
    pipeline.index(ws, IndexOptions(eval_queries=50, calibration_tracks=20), progress=progress)
else:
    pipeline.cluster(ws, ClusterOptions(k="auto", k_max=5), progress)
"""

# stage -> (the artefact folder it replaces, the progress step to be killed at: index is killed inside its
# staged folder, embed while its shards stream, cluster while it chooses k)
STAGES = {
    "embed": ("embeddings", "embedding"),
    "index": ("index", "fingerprints"),
    "cluster": ("clusters", "choosing k"),
}


def run_stage(stage: str, ws: Workspace) -> None:
    if stage == "embed":
        pipeline.embed(ws, EmbedOptions(device="cpu", full=True))
    elif stage == "index":
        pipeline.index(ws, IndexOptions(eval_queries=50, calibration_tracks=20))
    else:
        pipeline.cluster(ws, ClusterOptions(k="auto", k_max=5))


def digest(folder: Path) -> dict[str, str]:
    """Every file of an artefact folder and its content hash (meta.json's timestamps included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def meaning(folder: Path) -> dict[str, str]:
    """What a re-run must reproduce: the data files (meta.json records times and durations, which differ)."""
    return {name: h for name, h in digest(folder).items() if not name.endswith("meta.json")}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_kill_9_mid_stage_keeps_the_old_artefact_and_a_rerun_equals_a_clean_run(
    stage: str, trained_workspace: Workspace, tmp_path: Path
) -> None:
    ws = copy_workspace(trained_workspace, tmp_path / "killed")
    folder, at = STAGES[stage]
    if not (ws.root / folder / "meta.json").is_file():
        run_stage(stage, ws)  # an earlier artefact to protect
    before = digest(ws.root / folder)
    marker, driver = tmp_path / "marker", tmp_path / "driver.py"
    driver.write_text(DRIVER)
    kill_9_when_marked(driver, [stage, ws.root, marker, at], marker)
    assert digest(ws.root / folder) == before, "the killed run changed the previous artefact"

    run_stage(stage, ws)  # the rerun: takes the lock the dead process held, clears its staging folder
    clean = copy_workspace(trained_workspace, tmp_path / "clean")
    if not (clean.root / folder / "meta.json").is_file():
        run_stage(stage, clean)
    run_stage(stage, clean)
    assert meaning(ws.root / folder) == meaning(clean.root / folder)
    assert not list(ws.root.glob(f".{folder}.*")), "a staging folder of the killed run was left behind"
