"""Models made elsewhere: the bundled ones (``general``), model folders named on the command line, companions.

A folder of a few hundred one-shots is too little varied audio to learn a space from: a model trained on varied,
unrelated audio and applied unchanged describes such a folder better (docs/decisions). So embedtool ships such
a model, ``general`` (``embedtool/pretrained/general``; sources and licences in its ``CREDITS.md``;
``bench/train_general.sh`` re-makes it). It is a pair: a companion trained on other game soundtracks adds its
descriptors to the model's (:func:`attach_companion`; see :mod:`embedtool.model.encoder`).

- :func:`resolve_model_source` finds a model by bundled name or folder;
- :func:`load_init_weights` gives its weights to start training from (``embedtool train --init general``),
  checked against the training settings' architecture; the companion is not trained on;
- ``training.pretrained.adopt_model`` makes it a workspace's model as it is (``embedtool train --pretrained``).

Either way the model must have been made for features with the workspace's settings, and (to start from it)
for the same architecture; a mismatch is refused naming each differing setting.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from embedtool.artefacts import check_compatible, fingerprint_of, read_meta, staged_dir, write_meta
from embedtool.audio.settings import FeatureSettings
from embedtool.config import settings_dict
from embedtool.errors import ConfigError, MissingArtefactError
from embedtool.model.encoder import (
    COMPANION_DIR,
    FORMAT_VERSION,
    KIND,
    MODEL_FILES,
    Encoder,
    check_companion,
    model_files,
)
from embedtool.model.settings import TrainSettings

PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"
BUNDLED = ("general",)
# The settings that shape the network's weights: a model to start from must agree on all of them.
ARCHITECTURE_KEYS = ["stem", "width", "embedding_dim", "level_norm", "segment_seconds"]


def resolve_model_source(spec: str) -> Path:
    """A bundled model's name (``general``) or a model folder (a workspace's ``model/``, or the workspace)."""
    if spec in BUNDLED:
        return PRETRAINED_ROOT / spec
    path = Path(spec).expanduser()
    if (path / "model" / "meta.json").is_file():
        path = path / "model"
    if not path.exists():
        names = ", ".join(BUNDLED)
        raise ConfigError(f"No model {spec!r}: name a bundled model ({names}) or a model folder.")
    if not (path / "meta.json").is_file():
        raise MissingArtefactError(f"{path} is not a model folder (no meta.json); make one with `embedtool train`.")
    return path


def source_label(spec: str, source: Path) -> str:
    return spec if spec in BUNDLED else str(source)


def attach_companion(model_dir: Path, companion_spec: str, description: str = "") -> Encoder:
    """Give the model in ``model_dir`` a companion (see ``model.encoder``): a copy of the model ``companion_spec``
    (bundled name or folder) in ``model_dir/companion``, whose window descriptors are appended to the model's.

    The model's fingerprint becomes one of both, so exports made with the model alone are re-made; meta.json
    records the companion's fingerprint and ``description`` (default: where it came from). Refuses a
    companion made for other features or segment lengths, or one that has a companion itself.
    """
    model_dir = Path(model_dir)
    source = resolve_model_source(companion_spec)
    companion = Encoder.load(source)
    if companion.companion is not None:
        raise ConfigError(f"{companion_spec} has a companion itself; name a model without one.")
    own = Encoder.load(model_dir)
    if own.companion is not None:
        raise ConfigError(f"{model_dir} has a companion already.")
    check_companion(own.feature_settings, own.train_settings, companion)
    meta = read_meta(model_dir, KIND, FORMAT_VERSION)
    extra = dict(meta.extra)
    extra["companion"] = {
        "fingerprint": companion.fingerprint,
        "description": description or source_label(companion_spec, source),
    }
    fingerprint = fingerprint_of(meta.fingerprint, companion.fingerprint)
    with staged_dir(model_dir) as staging:
        for item in model_dir.iterdir():  # everything but the meta (written last) and a stray companion/
            if item.name == COMPANION_DIR:
                continue
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            elif item.name != "meta.json":
                shutil.copy2(item, staging / item.name)
        copy_model(source, staging / COMPANION_DIR)
        write_meta(
            staging, KIND, FORMAT_VERSION, meta.config, meta.inputs, extra, fingerprint=fingerprint,
            files=model_files(staging),
        )  # fmt: skip
    return Encoder.load(model_dir)


def copy_model(source: Path, target: Path) -> None:
    """A model's weights and meta.json (and credits): what loading it needs, not its training state."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (*MODEL_FILES, "meta.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def load_init_weights(
    spec: str, settings: TrainSettings, feature_settings: FeatureSettings
) -> tuple[dict[str, Any], str]:
    """The state dict of the model to start training from, checked against these settings; and its fingerprint."""
    source = resolve_model_source(spec)
    encoder = Encoder.load(source)
    encoder.check_features(feature_settings)
    check_compatible(
        settings_dict(encoder.train_settings),
        settings_dict(settings),
        f"starting model {source_label(spec, source)} vs these training settings",
        keys=ARCHITECTURE_KEYS,
    )
    state = {k: v.detach().cpu().clone() for k, v in encoder.net.state_dict().items()}
    return state, encoder.fingerprint
