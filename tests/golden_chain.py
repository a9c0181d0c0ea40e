"""The chain on the bundled audio, reduced to a few arrays: what the re-layering must not change.

``tests/data/golden_chain.npz`` was recorded with this function by the code *before* the re-layering
(``python -m tests.golden_chain``); ``test_behaviour_unchanged`` runs it again with the code as it is and compares.
Features must have the same frames and the same per-band statistics; embeddings and descriptors equal within float
tolerance. The features were first compared byte for byte (``mel_sha256``), but another CPU (AVX2 only, where the
recording machine had wider vector kernels) rounds some float16 log-Mel values the other way, so the per-band
statistics (``mel_frames``, ``mel_mean``, ``mel_std``) were added later, recorded by the code of commit cec5959
(``python tests/golden_chain.py --add-mel-statistics`` adds only those keys).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_AUDIO = Path(__file__).resolve().parents[1] / "embedtool" / "sample_audio" / "sonicpi-cc0"
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_chain.npz"
PROJECTION_DIM = 16  # segment vectors and descriptors are kept as a fixed random projection (a small fixture)


def _projection(dim: int) -> np.ndarray:
    return np.random.default_rng(1234).standard_normal((dim, PROJECTION_DIM)) / np.sqrt(dim)


def run_chain(workdir: Path) -> dict[str, np.ndarray]:
    """Extract the bundled audio, export embeddings with the bundled model and with an untrained network."""
    import torch

    from embedtool.audio.settings import FeatureSettings
    from embedtool.embedding.export import export_embeddings
    from embedtool.embedding.options import EmbedOptions
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.features.extract import run_extract
    from embedtool.features.options import ExtractOptions
    from embedtool.features.store import FeatureStore
    from embedtool.model.encoder import Encoder
    from embedtool.model.settings import TrainSettings
    from embedtool.model.store import resolve_model_source

    torch.set_num_threads(1)
    features_dir = workdir / "features"
    run_extract([SAMPLE_AUDIO], features_dir, FeatureSettings(), ExtractOptions(jobs=1))
    store = FeatureStore(features_dir)
    ids = sorted(store.track_ids())
    digests = [hashlib.sha256(np.ascontiguousarray(store.mel(tid)).tobytes()).hexdigest() for tid in ids]
    mels = [np.asarray(store.mel(tid), dtype=np.float64) for tid in ids]
    out: dict[str, np.ndarray] = {
        "track_ids": np.array(ids),
        "mel_sha256": np.array(digests),
        "mel_dtype": np.array(str(store.mel(ids[0]).dtype)),
        "mel_frames": np.array([m.shape[0] for m in mels]),
        "mel_mean": np.stack([m.mean(axis=0) for m in mels]).astype(np.float32),
        "mel_std": np.stack([m.std(axis=0) for m in mels]).astype(np.float32),
    }
    general = Encoder.load(resolve_model_source("general"))
    untrained = Encoder.untrained(FeatureSettings(), TrainSettings(width=0.125, embedding_dim=32), seed=0)
    untrained.set_input_stats(-6.0, 3.0)
    for name, encoder in (("general", general), ("untrained", untrained)):
        target = workdir / f"embeddings-{name}"
        export_embeddings(features_dir, encoder, target, EmbedOptions(device="cpu"))
        emb = EmbeddingStore(target)
        assert emb.track_ids() == ids, "export order changed"
        seg = np.asarray(emb.segment_vectors(), dtype=np.float64)
        # The network's part of each descriptor; the MFCC statistics appended since decision 0013 are checked
        # against the MFCC baseline in test_embed.
        desc = np.asarray(emb.track_descriptors(), dtype=np.float64)[:, : encoder.descriptor_dim]
        out[f"{name}_segments_shape"] = np.array(seg.shape)
        out[f"{name}_segments"] = (seg @ _projection(seg.shape[1])).astype(np.float32)
        out[f"{name}_segments_first"] = seg[:8].astype(np.float32)
        out[f"{name}_tracks"] = np.asarray(emb.track_vectors(), dtype=np.float32)
        out[f"{name}_descriptors_shape"] = np.array(desc.shape)
        out[f"{name}_descriptors"] = (desc @ _projection(desc.shape[1])).astype(np.float32)
        out[f"{name}_starts"] = np.asarray(emb.segment_starts, dtype=np.float64)
    return out


MEL_STATISTICS = ("mel_frames", "mel_mean", "mel_std")

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        arrays = run_chain(Path(tmp))
    if "--add-mel-statistics" in sys.argv[1:]:  # keep every earlier array as it was recorded
        with np.load(GOLDEN) as golden:
            arrays = {**dict(golden), **{key: arrays[key] for key in MEL_STATISTICS}}
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)", file=sys.stderr)
