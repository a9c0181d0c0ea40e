"""Fixtures of the features tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import SAMPLE_AUDIO


@pytest.fixture(scope="module")
def sample_audio_dir_module() -> Path:
    """The bundled CC0 percussion set, for module-scoped fixtures."""
    return SAMPLE_AUDIO
