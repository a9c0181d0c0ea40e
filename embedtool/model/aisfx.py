"""aisfx: the sound-effects embedding network of Ma & Lerch (ISMIR 2022), with its published weights, as a
teacher network beside embedtool's own model (``classify --features descriptors+aisfx``, ``model.teachers``).

The network and weights are those of PyPI ``aisfx`` 0.1.2 (model X-Sequential-CE, trained with labels on several
commercial sound-effect libraries; CC BY 4.0, credited in ``embedtool/pretrained/aisfx/CREDITS.md``): four blocks
of two 3x3 convolutions + batch norm + ReLU with 2x2 max pooling (64..512 channels), a mean over frequency and a
max over time, 512 numbers per block of 2.3 s. Only the embedding network is kept (its classification heads are
dropped), stored as int8 convolution weights with one scale per output channel and float16 batch norm (4.7 MB;
on the bundled samples the embeddings agree with the float32 package's to a cosine of 0.9995 at worst, 0.9998 on
the mean).

Its spectrogram is redone here with torch, as the package's librosa path makes it: the audio at 44.1 kHz,
peak-normalised; power STFT of 2048 samples, hop 1024 (Hann, centred, reflect padding); 96 HTK Mel bands over
0-22.05 kHz, each filter scaled to unit sum; ``log10(10000 x + 1)``, divided by the package's maximum (9.4578).
Non-overlapping blocks of 100 frames (a file shorter than one block is one zero-padded block); a file's vector is
the mean of its blocks' embeddings.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 44100
N_FFT, HOP = 2048, 1024
N_MELS = 96
BLOCK_FRAMES = 100
SPEC_MAX = 9.457798957824707
DIM = 512
BATCH = 32
WEIGHTS = "embedding.pt"
# what an artefact records of the teacher, so a cache made by another version is never reused
VERSION = "aisfx-0.1.2-X-Sequential-CE/int8/mean-of-blocks-100"


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return nn.functional.max_pool2d(x, self.pool) if self.pool > 1 else x


class AisfxNetwork(nn.Module):
    """(batch, 100 frames, 96 Mel bands) -> (batch, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_block1 = _ConvBlock(1, 64, 2)
        self.conv_block2 = _ConvBlock(64, 128, 2)
        self.conv_block3 = _ConvBlock(128, 256, 2)
        self.conv_block4 = _ConvBlock(256, 512, 1)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = spec.unsqueeze(1)
        for block in (self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4):
            x = block(x)
        return x.mean(dim=3).amax(dim=2)


def dequantised(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 state dict of the stored weights: ``NAME.int8`` x ``NAME.scale`` (per output channel) for the
    convolutions, the float16 rest as float32."""
    out = {}
    for key, value in state.items():
        if key.endswith(".int8"):
            name = key[: -len(".int8")]
            out[name] = value.float() * state[f"{name}.scale"].float().view(-1, 1, 1, 1)
        elif not key.endswith(".scale"):
            out[key] = value.float()
    return out


class AisfxEmbedder:
    """The network with the bundled weights, in float32 on CPU; ``embed(audio_44k)`` -> 512-d float32."""

    def __init__(self) -> None:
        import torchaudio.functional as F

        weights = resources.files("embedtool").joinpath("pretrained", "aisfx", WEIGHTS)
        with resources.as_file(weights) as path:
            state = torch.load(path, map_location="cpu", weights_only=True)
        self.network = AisfxNetwork()
        self.network.load_state_dict(dequantised(state), strict=False)
        self.network.eval()
        fbanks = F.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, None, "htk")
        self.fbanks = fbanks / fbanks.sum(dim=0, keepdim=True).clamp_min(1e-12)
        self.window = torch.hann_window(N_FFT)

    def spectrogram(self, audio: np.ndarray) -> torch.Tensor:
        """(frames, 96) scaled log-Mel of mono float32 ``audio`` at 44.1 kHz."""
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        peak = float(x.abs().max()) if x.numel() else 0.0
        x = x / (peak if peak > 0 else 1.0)
        if x.numel() <= N_FFT // 2:  # reflect padding needs more samples than half a frame
            x = nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.numel()))
        stft = torch.stft(x, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        mel = self.fbanks.T @ (stft.abs() ** 2)
        return (torch.log10(mel * 10000.0 + 1.0) / SPEC_MAX).T.contiguous()

    @torch.no_grad()
    def embed_blocks(self, audio: np.ndarray) -> np.ndarray:
        """The embeddings of the consecutive 2.3 s blocks of mono ``audio`` at 44.1 kHz, (blocks, 512) float32; a
        trailing part shorter than a block is left out, a file shorter than one block is one zero-padded block."""
        spec = self.spectrogram(audio)
        n = max(1, spec.shape[0] // BLOCK_FRAMES)
        padded = torch.cat([spec, torch.zeros(BLOCK_FRAMES, N_MELS)])[: n * BLOCK_FRAMES]
        blocks = padded.reshape(n, BLOCK_FRAMES, N_MELS)
        return torch.cat([self.network(blocks[i : i + BATCH]) for i in range(0, n, BATCH)]).numpy()

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """The mean of the blocks' embeddings of mono ``audio`` at 44.1 kHz (512-d float32)."""
        return self.embed_blocks(audio).mean(axis=0).astype(np.float32)
