"""Resemblyzer features for bench_suite and bench_fusion: the speaker encoder of Resemble AI (PyPI ``Resemblyzer``
0.1.4, Apache-2.0; a GE2E-trained 3-layer LSTM whose weights, ``pretrained.pt``, ship inside the wheel), as a
candidate teacher for voices and speech.

    bench/resemblyzer_setup.sh                      # installs it into the project's .venv (--no-deps, see there)
    .venv/bin/python bench/resemblyzer_features.py FILE...   # prints each file's vector shape and norm

Its network is plain torch; its librosa/webrtcvad preprocessing is redone here with torch, as
``resemblyzer.audio`` and ``VoiceEncoder.embed_utterance`` do it: the file at 16 kHz (embedtool's decoder and
resampler), its volume raised (never lowered) to -30 dBFS; the power Mel spectrogram of librosa 0.8's defaults
(400-sample Hann window, hop 160, centred with reflect padding, 40 Slaney Mel bands with Slaney norm over 0-8 kHz,
no log: the model was trained on it); partials of 160 frames (1.6 s) every 1/1.3 s, the last one kept when it is
3/4 covered (the audio zero-padded); each partial through the LSTM, ReLU(linear(last hidden state)), L2-normalised;
the file's vector is the L2-normalised mean of its partials (at most 64, spread evenly over a long file: the
LSTM is slow on hours of music, and a mean over 64 partials hardly moves). Left out: the package's voice-activity
trimming (webrtcvad, a C extension): long silences stay in, which matters little for the short speech files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from _common import decode_for, smoke_test

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40
PARTIAL_FRAMES = 160
RATE, MIN_COVERAGE = 1.3, 0.75  # VoiceEncoder.embed_utterance's defaults
MAX_PARTIALS = 64  # a long file: this many partials spread evenly over it (the LSTM costs ~1 s a minute of audio)
TARGET_DBFS = -30.0
BATCH = 64


class Model:
    """Resemblyzer's voice encoder with its shipped weights, on CPU; ``vector(path)`` -> (256-d float32, seconds)."""

    def __init__(self) -> None:
        import importlib.util

        import torchaudio.functional as F

        spec = importlib.util.find_spec("resemblyzer")  # not imported: its __init__ needs librosa and webrtcvad
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("Resemblyzer is not installed (run bench/resemblyzer_setup.sh)")
        weights = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
        state = torch.load(weights, map_location="cpu", weights_only=False)["model_state"]
        self.lstm = torch.nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self.fbanks = F.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, "slaney", "slaney")
        self.window = torch.hann_window(N_FFT)

    @staticmethod
    def partial_starts(n_samples: int) -> tuple[list[int], int]:
        """Mel-frame starts of the partials and the samples the audio must be padded to (embed_utterance's rule)."""
        n_frames = int(np.ceil((n_samples + 1) / HOP))
        step = int(np.round((SAMPLE_RATE / RATE) / HOP))
        starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
        coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
        if coverage < MIN_COVERAGE and len(starts) > 1:
            starts = starts[:-1]
        return starts, (starts[-1] + PARTIAL_FRAMES) * HOP

    def mel(self, audio: np.ndarray) -> torch.Tensor:
        """(frames, 40) power Mel spectrogram, librosa 0.8's ``melspectrogram`` defaults."""
        x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        if x.numel() <= N_FFT // 2:
            x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.numel()))
        stft = torch.stft(x, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return (self.fbanks.T @ stft.abs() ** 2).T.contiguous()

    @torch.no_grad()
    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        """The utterance embedding (256-d, unit norm) of mono float32 ``audio`` at 16 kHz."""
        audio = np.asarray(audio, dtype=np.float32)
        rms = float(np.sqrt(np.mean((audio.astype(np.float64) * 32767) ** 2))) if audio.size else 0.0
        if rms > 0:
            change = TARGET_DBFS - 20 * np.log10(rms / 32767)
            if change > 0:  # increase only
                audio = audio * np.float32(10 ** (change / 20))
        starts, padded = self.partial_starts(audio.size)
        if padded > audio.size:
            audio = np.pad(audio, (0, padded - audio.size))
        mel = self.mel(audio)
        if len(starts) > MAX_PARTIALS:
            starts = [starts[i] for i in np.linspace(0, len(starts) - 1, MAX_PARTIALS).round().astype(int)]
        partials = torch.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])
        out = []
        for i in range(0, len(partials), BATCH):
            _, (hidden, _) = self.lstm(partials[i : i + BATCH])
            raw = torch.relu(self.linear(hidden[-1]))
            out.append(raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12))
        mean = torch.cat(out).mean(dim=0)
        return (mean / mean.norm().clamp_min(1e-12)).numpy().astype(np.float32)

    def vector(self, path: str) -> tuple[np.ndarray, float]:
        """The file's vector and its duration in seconds."""
        audio = decode_for(path, SAMPLE_RATE)
        return self.embed_audio(audio), audio.size / SAMPLE_RATE


if __name__ == "__main__":
    sys.exit(smoke_test(Model, 256, __doc__))
