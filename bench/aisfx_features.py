"""aisfx features for bench_suite: the sound-effects embedding of Ma & Lerch, "Representation Learning for the
Automatic Indexing of Sound Effects Libraries" (ISMIR 2022), PyPI ``aisfx`` 0.1.2, whose wheel ships the weights of
its best model (X-Sequential-CE, trained with labels on several commercial sound-effect libraries; CC BY 4.0).

    bench/aisfx_setup.sh                       # installs it into the project's .venv (--no-deps, see there)
    .venv/bin/python bench/aisfx_features.py FILE...   # prints each file's vector shape and norm (a smoke test)

Its model is plain torch, so it runs in the project's venv; its pinned librosa 0.9.2 / numpy 1.23 are not needed:
the spectrogram of the package's librosa path is computed here with torch, step by step as
``aisfx.spectrogram.spectrogram_librosa`` does it: the file at 44.1 kHz (embedtool's decoder and resampler), peak-
normalised; power STFT of 2048 samples, hop 1024 (Hann, centred, reflect-padded: librosa 0.9's defaults); 96 HTK
Mel bands over 0–22.05 kHz, each filter scaled to unit sum (librosa's ``norm=1``); ``log10(10000 x + 1)``; then the
package's ``original`` min-max scaling (0 .. 9.4578). Blocks of 100 frames (2.3 s, the model's input), padded
with zeros as ``aisfx.preprocessing.blocking`` pads them (a file shorter than one block is one padded block), go
through the embedding network, whose own max over time gives one 512-d vector per block; the file's vector is the
mean over its blocks. Blocks do not overlap here (the paper's extraction hops half a block): the mean over a file
hardly moves, and it halves the time on long music.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 44100
N_FFT, HOP = 2048, 1024
N_MELS = 96
BLOCK_FRAMES = 100  # aisfx.inference.EMB_BLOCK_LENGTH
SPEC_MAX = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize(spec_norm="original")
BATCH = 32  # blocks per forward pass (batch norm in eval mode: blocks do not interact)


class Model:
    """aisfx's embedding network with its shipped weights, on CPU; ``vector(path)`` -> (512-d float32, seconds)."""

    def __init__(self) -> None:
        import aisfx
        import torchaudio.functional as F
        from aisfx.models.cnn2d import CrossNet, EmbeddingNet

        checkpoint = Path(aisfx.__file__).parent / "models" / "checkpoint.pth"
        # a (state_dict, {dataset: (index, classes)}) tuple whose class counts are numpy scalars, which torch's
        # weights-only unpickler refuses: loaded in full, as aisfx.inference.load_weights does (a file of the wheel)
        weights, datasets = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = CrossNet(EmbeddingNet("max", 3, 1, 64), datasets, "cpu")  # aisfx.inference.load_bestModel
        model.load_state_dict(weights)
        self.network = model.embedding_net.eval()
        fbanks = F.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, None, "htk")
        self.fbanks = fbanks / fbanks.sum(dim=0, keepdim=True).clamp_min(1e-12)  # unit-sum filters (librosa norm=1)
        self.window = torch.hann_window(N_FFT)

    def spectrogram(self, audio: np.ndarray) -> torch.Tensor:
        """(frames, 96) scaled log-Mel of mono float32 ``audio`` at 44.1 kHz."""
        x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        peak = float(x.abs().max()) if x.numel() else 0.0
        x = x / (peak if peak > 0 else 1.0)
        if x.numel() <= N_FFT // 2:  # reflect padding needs more samples than half a frame
            x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.numel()))
        stft = torch.stft(x, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = stft.abs() ** 2  # (freq, frames)
        mel = self.fbanks.T @ power  # (96, frames)
        return (torch.log10(mel * 10000.0 + 1.0) / SPEC_MAX).T.contiguous()

    def blocks(self, spec: torch.Tensor) -> torch.Tensor:
        """(n_blocks, 100, 96): non-overlapping blocks, the last partial one dropped, at least one (zero-padded)."""
        n = max(1, spec.shape[0] // BLOCK_FRAMES)
        padded = torch.cat([spec, torch.zeros(BLOCK_FRAMES, spec.shape[1])])[: n * BLOCK_FRAMES]
        return padded.reshape(n, BLOCK_FRAMES, spec.shape[1])

    @torch.no_grad()
    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        """The mean of the blocks' 512-d embeddings (float32) of mono ``audio`` at 44.1 kHz."""
        blocks = self.blocks(self.spectrogram(audio))
        out = torch.cat([self.network(blocks[i : i + BATCH]) for i in range(0, len(blocks), BATCH)])
        return out.mean(dim=0).numpy().astype(np.float32)

    def vector(self, path: str) -> tuple[np.ndarray, float]:
        """The file's vector and its duration in seconds."""
        from embedtool.audio.decode import decode_file

        audio = decode_file(path, SAMPLE_RATE).samples
        if audio.size == 0:
            raise ValueError("decoded to no samples")
        return self.embed_audio(audio), audio.size / SAMPLE_RATE


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[5].strip(), file=sys.stderr)
        return 2
    model = Model()
    for path in sys.argv[1:]:
        vector, seconds = model.vector(path)
        assert vector.shape == (512,) and np.isfinite(vector).all(), (vector.shape, path)
        print(f"{path}: {seconds:.2f} s -> {vector.shape[0]}-d, norm {np.linalg.norm(vector):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
