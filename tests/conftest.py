"""Shared test fixtures. Keep tests fast: tiny signals, tiny models, CPU only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SAMPLE_AUDIO = Path(__file__).resolve().parents[1] / "embedtool" / "sample_audio" / "sonicpi-cc0"

# Two cores on CI: one torch thread per test process avoids oversubscription with numpy/FAISS.
torch.set_num_threads(1)


@pytest.fixture
def sample_audio_dir() -> Path:
    """The bundled CC0 percussion set (folder per label, CREDITS.md, labels.csv)."""
    return SAMPLE_AUDIO


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own folder so no test sees a developer's embedtool.yaml or workspace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDTOOL_WORKSPACE", raising=False)


@pytest.fixture(scope="module")
def sample_audio_dir_module() -> Path:
    """:func:`sample_audio_dir` for module-scoped fixtures."""
    return SAMPLE_AUDIO
