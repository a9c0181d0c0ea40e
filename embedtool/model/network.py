"""The network: ResNet18 on 1-channel log-Mel segments, and the window *descriptors* it can return.

Architecture: ResNet18 (BasicBlocks [2, 2, 2, 2], channels 64/128/256/512 times ``width``) on a
(batch, 1, frames, n_mels) input, with either the ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool) or
the Tile2Vec stem (3x3 stride-1 conv, no pooling); then global average pooling, dropout and a linear projection
to ``embedding_dim``. :class:`embedtool.model.encoder.Encoder` L2-normalises what it returns.

Input: a fixed standardisation (mean/std of the training features, stored as buffers in the state dict) puts
log-Mels near zero mean and unit variance before the first convolution. ``level_norm`` centres each window on
its own level instead (``mean``: its mean log-Mel; ``peak``: its loudest bin): a gain change adds a constant to
every log-Mel bin, so the embedding then ignores the playback level exactly. Off by default: it fixed
re-identification of quieter copies but cost noisy excerpts more (docs/decisions).

Descriptors: beside the embedding, the network can return a window's *descriptor*: each of the four ResNet
stages' activations averaged over time and over ``DESCRIPTOR_BANDS`` equal slices of the frequency axis (low and
high), concatenated (``descriptor_dim`` = (64+128+256+512) x ``width`` x ``DESCRIPTOR_BANDS``; at 64 Mel bands
the last stage is exactly two bins wide). The triplet objective makes the last stage invariant to whatever does
not tell recordings apart, which is right for search; the earlier stages keep the timbre cues a classifier of
*kinds* of sound needs (the usual linear-probe practice of self-supervised learning, which evaluates below the
projection head). A global average would also throw away *where* in frequency a pattern sits; two bands keep
the coarse position. ``embedding.pooling.pool_descriptors`` turns a track's window descriptors into its track
descriptor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedtool.model.settings import TrainSettings

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
        distil_dims: dict[str, int] | None = None,
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
        # Distillation heads (training only, left out of the model artefact): a linear map from a window's
        # descriptor to each teacher's output, so every stage learns what the teacher knows.
        self.distil = nn.ModuleDict(
            {name: nn.Linear(self.descriptor_dim, dim) for name, dim in (distil_dims or {}).items()}
        )
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
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(("head.", "distil.")))

    @property
    def descriptor_dim(self) -> int:
        return DESCRIPTOR_BANDS * sum(stage[-1].bn2.num_features for stage in self.layers)

    def forward(self, x: torch.Tensor, distil: bool = False) -> Any:
        """Embeddings; with ``distil``, (embeddings, {teacher: its head's output}) for training."""
        if distil:
            embedding, descriptor = self.embed_and_describe(x)
            return embedding, {name: head(descriptor) for name, head in self.distil.items()}
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

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each residual stage's activations (batch, channels, frames, bands) for the log-Mel windows ``x``: what
        the descriptors pool."""
        x = self._stem(x)
        outputs = []
        for stage in self.layers:
            x = stage(x)
            outputs.append(x)
        return outputs

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


def build_network(settings: TrainSettings, distil_dims: dict[str, int] | None = None) -> EmbeddingNet:
    """The network of ``settings``; ``distil_dims`` ({teacher: output size}) adds distillation heads (training)."""
    return EmbeddingNet(
        settings.stem, settings.width, settings.embedding_dim, settings.dropout, settings.level_norm, distil_dims
    )


def without_distil_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the distillation heads: what a model artefact keeps."""
    return {k: v for k, v in state.items() if not k.startswith("distil.")}


def describe(settings: TrainSettings) -> dict[str, Any]:
    """Parameter counts of the network these settings build (for reports)."""
    net = build_network(settings)
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "trunk_parameters": net.trunk_parameters(),
        "settings": dataclasses.asdict(settings),
    }
