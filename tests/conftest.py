"""Shared test fixtures. Keep tests fast: tiny signals, tiny models, CPU only. Test data builders: factories.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from factories import (
    SAMPLE_AUDIO,
    TINY_CHAIN_TRAIN,
    copy_workspace,
    make_chain_corpus,
)

from embedtool.workspace import Workspace

# Two cores on CI: one torch thread per test process avoids oversubscription with numpy/FAISS; the stages that
# choose their threads from the free CPUs (embedtool.threads) are fixed to one too (subprocesses inherit it).
torch.set_num_threads(1)
os.environ.setdefault("EMBEDTOOL_THREADS", "1")


@pytest.fixture
def sample_audio_dir() -> Path:
    """The bundled CC0 percussion set (folder per label, CREDITS.md, labels.csv)."""
    return SAMPLE_AUDIO


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own folder so no test sees a developer's embedtool.yaml or workspace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDTOOL_WORKSPACE", raising=False)


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One trained workspace for the whole session, built on first use: the labelled corpus of
    ``factories.make_chain_corpus`` (3 generated classes x 6 tracks of 4 s), extracted, a tiny model
    (``TINY_CHAIN_TRAIN``, seconds on a CPU), embedded and indexed.

    Read only: a test that writes to a workspace takes :func:`trained_workspace_copy`. The session checks at its
    end that no test changed this one.
    """
    from embedtool import pipeline
    from embedtool.features.options import ExtractOptions
    from embedtool.indexing.options import IndexOptions

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:  # as every test: its own folder, no developer's settings
        mp.chdir(root)
        mp.delenv("EMBEDTOOL_WORKSPACE", raising=False)
        torch.set_num_threads(1)
        corpus = make_chain_corpus(root / "corpus")
        ws = Workspace.at(root / "ws")
        pipeline.extract(ws, [corpus], options=ExtractOptions(jobs=1))
        pipeline.train(ws, TINY_CHAIN_TRAIN)
        pipeline.index(ws, IndexOptions(calibration_tracks=12, eval_queries=20))
    built = _listing(ws.root)
    yield ws
    assert _listing(ws.root) == built, "a test wrote to the shared trained_workspace; use trained_workspace_copy"


@pytest.fixture
def trained_workspace_copy(trained_workspace: Workspace, tmp_path: Path) -> Workspace:
    """A copy of :func:`trained_workspace` of this test's own, to write to."""
    return copy_workspace(trained_workspace, tmp_path / "ws")


@pytest.fixture(scope="session")
def served_workspace(trained_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A copy of :func:`trained_workspace` with every artefact the web app shows: clusters, a classifier and a
    (light) evaluate report. Read only, like the original."""
    from embedtool import pipeline
    from embedtool.analysis.options import ClusterOptions, EvaluateOptions

    ws = copy_workspace(trained_workspace, tmp_path_factory.mktemp("served") / "ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws.root.parent)
        pipeline.cluster(ws, ClusterOptions(k="3"))
        pipeline.classify(ws)
        light = EvaluateOptions(
            name="served", k=(1,), robustness=False, baselines=False, untrained_baseline=False, pretrained_baseline=""
        )
        pipeline.evaluate(ws, light)
    return ws
