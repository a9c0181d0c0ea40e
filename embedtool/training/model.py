"""The network (ResNet18 on 1-channel log-Mel segments) and ``Encoder``, the inference wrapper others use.

Architecture: ResNet18 (BasicBlocks [2, 2, 2, 2], channels 64/128/256/512 times ``width``) on a
(batch, 1, frames, n_mels) input, with either the ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool) or
the Tile2Vec stem (3x3 stride-1 conv, no pooling); then global average pooling, dropout and a linear projection
to ``embedding_dim``. ``Encoder`` always returns L2-normalised embeddings.

Input: a fixed standardisation (mean/std of the training features, stored as buffers in the state dict) puts
log-Mels near zero mean and unit variance before the first convolution. ``level_norm`` centres each window on
its own level instead (``mean``: its mean log-Mel; ``peak``: its loudest bin): a gain change adds a constant to
every log-Mel bin, so the embedding then ignores the playback level exactly. Off by default: on music-dev it
fixed re-identification of -12 dB copies but cost noisy excerpts more (README, benchmarks).

Descriptors: beside the embedding, the network can return a window's *descriptor*: each of the four ResNet
stages' activations averaged over time and over ``DESCRIPTOR_BANDS`` equal slices of the frequency axis (low and
high), concatenated (``descriptor_dim`` = (64+128+256+512) x ``width`` x ``DESCRIPTOR_BANDS``; at 64 Mel bands
the last stage is exactly two bins wide). The triplet objective makes the last stage invariant to whatever does
not tell recordings apart, which is right for search; the earlier stages keep the timbre cues a classifier of
*kinds* of sound needs (the usual linear-probe practice of self-supervised learning, which evaluates below the
projection head). A global average would also throw away *where* in frequency a pattern sits; two bands keep
the coarse position (four were no better: README, benchmarks). ``embedding.pooling.pool_descriptors`` turns a
track's window descriptors into its track descriptor.

Companion: a model folder may hold a second model made for the same features and segment length in
``companion/`` (named by fingerprint in the model's meta ``extra.companion``; the model's own fingerprint covers
both). Its window descriptors are appended to the model's own, so track descriptors (what the classifiers of
``classify`` and ``evaluate`` read) come from two networks trained on different audio; embeddings (search,
``cluster``) come from the model's own network alone, so queries cost the same. Two models trained on
different audio describe kinds of sound better than either alone (README, benchmarks); the bundled ``general``
model is such a pair.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedtool.artefacts import check_compatible, read_meta
from embedtool.audio.settings import FeatureSettings
from embedtool.config import settings_dict
from embedtool.errors import IncompatibleArtefactError, MissingArtefactError
from embedtool.training.segments import crop_many, segment_frames_for, silence_floor, window_starts
from embedtool.training.settings import TrainSettings

KIND = "model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
COMPANION_DIR = "companion"  # a second model whose window descriptors are appended (see the module doc)
# Frequency slices each stage's activations are averaged over, for descriptors (change DESCRIPTOR_KIND with it).
DESCRIPTOR_BANDS = 2


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


def channels_for(width: float) -> list[int]:
    return [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]


class EmbeddingNet(nn.Module):
    """ResNet18 trunk + global average pool + dropout + projection. Returns unnormalised embeddings."""

    def __init__(
        self,
        stem: str = "imagenet",
        width: float = 1.0,
        embedding_dim: int = 128,
        dropout: float = 0.0,
        level_norm: str = "off",
    ):
        super().__init__()
        if level_norm not in ("off", "mean", "peak"):
            raise ValueError(f"unknown level_norm {level_norm!r}")
        self.level_norm = level_norm
        chans = channels_for(width)
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(1, chans[0], 7, 2, 3, bias=False),
                nn.BatchNorm2d(chans[0]),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        elif stem == "tile2vec":
            self.stem = nn.Sequential(
                nn.Conv2d(1, chans[0], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)
            )
        else:
            raise ValueError(f"unknown stem {stem!r}")
        layers, in_ch = [], chans[0]
        for i, out_ch in enumerate(chans):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)))
            in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_ch, embedding_dim)
        self.register_buffer("input_mean", torch.zeros(()))
        self.register_buffer("input_std", torch.ones(()))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each block: every residual branch starts as identity (trains faster).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def trunk_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("head."))

    @property
    def descriptor_dim(self) -> int:
        return DESCRIPTOR_BANDS * sum(stage[-1].bn2.num_features for stage in self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self._stem(x))
        return self.head(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))

    def embed_and_describe(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unnormalised embeddings, descriptors): see the module doc. Training uses ``forward``, which skips
        the descriptor's extra pooling."""
        x = self._stem(x)
        pooled = []
        for stage in self.layers:
            x = stage(x)
            pooled.append(torch.flatten(F.adaptive_avg_pool1d(x.mean(dim=2), DESCRIPTOR_BANDS), 1))
        # The embedding's global average is the mean of the last stage's bands only when the bands are equal
        # slices, so it is pooled from the activations directly.
        embedding = self.head(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))
        return embedding, torch.cat(pooled, 1)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (B, frames, mels) -> (B, 1, frames, mels)
        if self.level_norm == "mean":
            centre = x.mean(dim=(2, 3), keepdim=True)
        elif self.level_norm == "peak":
            centre = x.amax(dim=(2, 3), keepdim=True)
        else:
            centre = self.input_mean
        return self.stem((x - centre) / self.input_std)


def build_network(settings: TrainSettings) -> EmbeddingNet:
    return EmbeddingNet(settings.stem, settings.width, settings.embedding_dim, settings.dropout, settings.level_norm)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from embedtool.errors import ConfigError

        raise ConfigError("device 'cuda' was asked for, but no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(device)


class Encoder:
    """A trained (or untrained) network ready to embed windows of log-Mel features."""

    def __init__(
        self,
        net: EmbeddingNet,
        feature_settings: FeatureSettings,
        train_settings: TrainSettings,
        fingerprint: str,
        config: dict[str, Any],
        device: str = "cpu",
        batch_size: int = 256,
        companion: Encoder | None = None,
    ):
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.companion = companion
        self.feature_settings = feature_settings
        self.train_settings = train_settings
        self.segment_frames = segment_frames_for(train_settings.segment_seconds, feature_settings.frames_per_second)
        self.embedding_dim = int(train_settings.embedding_dim)
        self.descriptor_dim = int(net.descriptor_dim) + (companion.descriptor_dim if companion else 0)
        self.fingerprint = fingerprint
        self.config = config
        self.batch_size = batch_size
        self.pad_value = silence_floor(feature_settings.log_offset)

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> Encoder:
        """Load a model artefact; refuses a missing or incompatible one with a clear error."""
        model_dir = Path(model_dir)
        meta = read_meta(model_dir, KIND, FORMAT_VERSION)
        try:
            feature_settings = FeatureSettings(**meta.config["features"])
            train_settings = TrainSettings(**meta.config["train"])
        except (KeyError, TypeError) as exc:
            raise IncompatibleArtefactError(f"{model_dir}/meta.json does not describe a model: {exc}") from exc
        weights = model_dir / WEIGHTS_FILE
        if not weights.is_file():
            raise MissingArtefactError(f"{weights} is missing (re-make the model with `embedtool train`).")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise IncompatibleArtefactError(f"Cannot read model weights {weights}: {exc}") from exc
        net = build_network(train_settings)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise IncompatibleArtefactError(
                f"Model weights in {weights} do not fit the architecture in its meta.json: {exc}"
            ) from exc
        companion = _load_companion(model_dir, meta.extra.get("companion"), feature_settings, train_settings, device)
        return cls(
            net, feature_settings, train_settings, meta.fingerprint, meta.config, device=device, companion=companion
        )

    @classmethod
    def untrained(cls, feature_settings: FeatureSettings, train_settings: TrainSettings, seed: int = 0) -> Encoder:
        """The same architecture with random weights: the baseline a trained model must beat."""
        torch.manual_seed(seed)
        net = build_network(train_settings)
        config = {"features": settings_dict(feature_settings), "train": settings_dict(train_settings)}
        return cls(net, feature_settings, train_settings, f"untrained-{seed}", config)

    def set_input_stats(self, mean: float, std: float) -> None:
        """Input standardisation for an untrained network (a trained one carries its own)."""
        self.net.input_mean.fill_(float(mean))
        self.net.input_std.fill_(float(std))

    def check_features(self, feature_settings: FeatureSettings) -> None:
        """Refuse features made with other settings than the model was trained on, naming the differences."""
        check_compatible(settings_dict(self.feature_settings), settings_dict(feature_settings), "model vs features")

    @torch.no_grad()
    def embed_windows(self, windows: np.ndarray, descriptors: bool = False) -> Any:
        """[B, frames, n_mels] windows -> [B, dim] float32 L2-normalised embeddings (batched, eval mode);
        with ``descriptors`` a triple (embeddings, [B, descriptor_dim] float32 descriptors, [B] window energies)
        for ``embedding.pooling.pool_descriptors``."""
        windows = np.asarray(windows)
        if windows.ndim != 3 or windows.shape[1:] != (self.segment_frames, self.feature_settings.n_mels):
            raise ValueError(
                f"expected windows of shape (B, {self.segment_frames}, {self.feature_settings.n_mels}), "
                f"got {windows.shape}"
            )
        self.net.eval()
        out = np.empty((len(windows), self.embedding_dim), dtype=np.float32)
        desc = np.empty((len(windows), self.descriptor_dim), dtype=np.float32)
        for i in range(0, len(windows), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(windows[i : i + self.batch_size], dtype=np.float32))
            chunk = chunk.to(self.device)
            if descriptors:
                emb, d = self.net.embed_and_describe(chunk)
                if self.companion is not None:
                    d = torch.cat([d.float(), self.companion.net.embed_and_describe(chunk)[1].float()], 1)
                desc[i : i + len(chunk)] = d.float().cpu().numpy()
            else:  # queries: no descriptor work on the search path
                emb = self.net(chunk)
            out[i : i + len(chunk)] = F.normalize(emb.float(), dim=1).cpu().numpy()
        return (out, desc, self.window_energy(windows)) if descriptors else out

    def window_energy(self, windows: np.ndarray) -> np.ndarray:
        """[B] float64 mean power of each window (features back in the linear power domain)."""
        fs = self.feature_settings
        linear = np.maximum(np.exp(np.asarray(windows, dtype=np.float64)) - fs.log_offset, 0.0)
        return (linear ** (2.0 / fs.power)).mean(axis=(1, 2))

    def embed_track(self, mel: np.ndarray, hop_frames: int, descriptors: bool = False) -> Any:
        """Windows of one track by the segment rule (``segments.window_starts``): (starts, embeddings), or
        (starts, embeddings, descriptors, energies) with ``descriptors``."""
        starts = window_starts(mel.shape[0], self.segment_frames, hop_frames)
        out = np.empty((len(starts), self.embedding_dim), dtype=np.float32)
        desc = np.empty((len(starts), self.descriptor_dim), dtype=np.float32)
        energy = np.empty(len(starts), dtype=np.float64)
        for i in range(0, len(starts), self.batch_size):
            part = starts[i : i + self.batch_size]
            windows = crop_many(mel, part, self.segment_frames, self.pad_value)
            rows = slice(i, i + len(part))
            if descriptors:
                out[rows], desc[rows], energy[rows] = self.embed_windows(windows, descriptors=True)
            else:  # no descriptor work (nor the companion's forward pass) when only embeddings are asked for
                out[rows] = self.embed_windows(windows)
        return (starts, out, desc, energy) if descriptors else (starts, out)


def _load_companion(
    model_dir: Path,
    named: Any,
    feature_settings: FeatureSettings,
    train_settings: TrainSettings,
    device: str,
) -> Encoder | None:
    """The companion model a model's meta names (``{"fingerprint": ...}``), checked to belong to it; or None."""
    folder = model_dir / COMPANION_DIR
    if not named:
        return None  # a stray companion/ folder the meta does not name is not part of this model
    if not (folder / "meta.json").is_file():
        raise MissingArtefactError(
            f"{model_dir}'s meta.json names a companion model, but {folder} is missing; copy the whole model folder."
        )
    companion = Encoder.load(folder, device=device)
    if companion.fingerprint != named.get("fingerprint") or companion.companion is not None:
        raise IncompatibleArtefactError(
            f"{folder} is not the companion {model_dir}'s meta.json names (model {companion.fingerprint}, "
            f"expected {named.get('fingerprint')})."
        )
    check_companion(feature_settings, train_settings, companion)
    return companion


def check_companion(feature_settings: FeatureSettings, train_settings: TrainSettings, companion: Encoder) -> None:
    """A companion must read the same windows: features made with the same settings, the same segment length."""
    check_compatible(
        settings_dict(feature_settings), settings_dict(companion.feature_settings), "model vs its companion"
    )
    check_compatible(
        {"segment_seconds": train_settings.segment_seconds},
        {"segment_seconds": companion.train_settings.segment_seconds},
        "model vs its companion",
    )


def describe(settings: TrainSettings) -> dict[str, Any]:
    """Parameter counts of the network these settings build (for reports)."""
    net = build_network(settings)
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "trunk_parameters": net.trunk_parameters(),
        "settings": dataclasses.asdict(settings),
    }
