"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import extract_features, make_class_corpus


@pytest.fixture(scope="module")
def class_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real generated audio of 4 distinct sound classes (6 tracks of 4 s each), extracted once."""
    root = tmp_path_factory.mktemp("classes")
    corpus = make_class_corpus(root / "corpus", classes=4, per_class=6, seconds=4.0, seed=1)
    extract_features(corpus, root / "features")
    return root / "features"
