"""aisfx features for bench_suite: the sound-effects embedding of Ma & Lerch, "Representation Learning for the
Automatic Indexing of Sound Effects Libraries" (ISMIR 2022), as embedtool bundles it for
``--features descriptors+aisfx``: ``embedtool.model.aisfx`` (the network of PyPI ``aisfx`` 0.1.2 re-written, its
X-Sequential-CE weights reduced to the embedding network with int8 convolutions, its librosa spectrogram recomputed
with torch; the embeddings agree with the package's float32 model to a cosine of 0.9995 at worst). A file's vector
is the mean of its non-overlapping 2.3 s blocks' 512-d embeddings.

    .venv/bin/python bench/aisfx_features.py FILE...   # prints each file's vector shape and norm (a smoke test)

The suite's cached aisfx vectors (``aisfx-embedding.npz`` in each corpus workspace) written before this module
came from the package's own float32 weights, through the same spectrogram and blocks.
"""

from __future__ import annotations

import sys

import numpy as np
from _common import decode_for, smoke_test

from embedtool.model.aisfx import DIM, SAMPLE_RATE, AisfxEmbedder


class Model:
    """``vector(path)`` -> (512-d float32, seconds)."""

    def __init__(self) -> None:
        self.embedder = AisfxEmbedder()

    def vector(self, path: str) -> tuple[np.ndarray, float]:
        audio = decode_for(path, SAMPLE_RATE)
        return self.embedder.embed(audio), audio.size / SAMPLE_RATE


if __name__ == "__main__":
    sys.exit(smoke_test(Model, DIM, __doc__))
