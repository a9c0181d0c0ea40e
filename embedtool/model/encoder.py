"""``Encoder``: a model artefact loaded for inference — the network, its feature settings and its companion.

Every stage that *uses* a model (export, queries, classify QUERY, evaluate) goes through this class; training
builds the bare network (:mod:`embedtool.model.network`). Embeddings are always L2-normalised.

Companion: a model folder may hold a second model made for the same features and segment length in
``companion/`` (named by fingerprint in the model's meta ``extra.companion``; the model's own fingerprint covers
both). Its window descriptors are appended to the model's own, so track descriptors (what the classifiers of
``classify`` and ``evaluate`` read) come from two networks trained on different audio; embeddings (search,
``cluster``) come from the model's own network alone, so queries cost the same. Two models trained on
different audio describe kinds of sound better than either alone (docs/decisions); the bundled ``general``
model is such a pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embedtool.artefacts import check_compatible, read_member, read_meta
from embedtool.audio.settings import FeatureSettings
from embedtool.config import settings_dict
from embedtool.errors import IncompatibleArtefactError, MissingArtefactError
from embedtool.features.windows import crop_many, segment_frames_for, silence_floor, window_starts
from embedtool.model.device import resolve_device
from embedtool.model.network import EmbeddingNet, build_network
from embedtool.model.settings import TrainSettings

KIND = "model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
COMPANION_DIR = "companion"  # a second model whose window descriptors are appended (see the module doc)
# What makes a model (beside meta.json), what a copy of it holds and what its checksums cover; training state
# (checkpoint, metrics, TensorBoard) may sit beside them but is not part of what loading reads.
MODEL_FILES = (WEIGHTS_FILE, "CREDITS.md")


def model_files(directory: Path) -> list[str]:
    """The files of the model in ``directory`` its meta.json records checksums of: :data:`MODEL_FILES` that are
    there (a companion's are in the companion's own meta.json; the model's names the companion by fingerprint)."""
    return [name for name in MODEL_FILES if (Path(directory) / name).is_file()]


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
        state = read_member(
            meta, model_dir, WEIGHTS_FILE, lambda path: torch.load(path, map_location="cpu", weights_only=True)
        )
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
        """Windows of one track by the segment rule (``features.windows.window_starts``): (starts, embeddings), or
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
