"""Starting points other than random weights: the bundled ``general`` model, or any model folder.

A folder of a few hundred one-shots is too little varied audio to learn a space from: on the drums corpus a
model trained on that folder alone separates instruments less well (macro-F1 0.69, 5-fold by kit) than one
trained on 3.4 hours of varied, unrelated audio and applied unchanged (0.74); see the README's benchmark.
So embedtool ships such a model, ``general`` (``embedtool/pretrained/general``; sources and licences in its
``CREDITS.md``; ``bench/train_general.sh`` re-makes it). It is a pair: a companion trained on 4.2 hours of other
game soundtracks adds its descriptors to the model's (``attach_companion``; see ``training.model``), which
lifted drums held out by kit from 0.746 to 0.757 (grouped 5-fold macro-F1; README). embedtool offers two
ways to use a model made elsewhere:

- ``adopt_model``: make it this workspace's model as it is (``embedtool train --pretrained general``);
- ``load_init_weights``: start training from its weights (``embedtool train --init general``); the companion is
  not trained on, and the result has none.

Either way the model must have been made for features with the workspace's settings, and (to start from it)
for the same architecture; a mismatch is refused naming each differing setting.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from embedtool.artefacts import check_compatible, fingerprint_of, read_meta, staged_dir, write_meta
from embedtool.config import settings_dict
from embedtool.errors import ConfigError, MissingArtefactError
from embedtool.features.store import FeatureStore
from embedtool.training.model import COMPANION_DIR, FORMAT_VERSION, KIND, WEIGHTS_FILE, Encoder, check_companion
from embedtool.training.settings import TrainSettings
from embedtool.training.splits import ensure_split

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


def adopt_model(spec: str, features_dir: Path, split_dir: Path, model_dir: Path, settings: TrainSettings) -> Encoder:
    """Copy a model (bundled name or folder) into ``model_dir`` as this workspace's model, unchanged.

    The weights and their fingerprint stay the same; meta.json records where the model came from and that it
    was not trained on this workspace's features. Refuses a model made for other feature settings. The
    workspace still gets its split (``settings``' seed, val_fraction, split_by), which `classify` and
    `evaluate` hold tracks out by, exactly as after training.
    """
    source = resolve_model_source(spec)
    encoder = Encoder.load(source)
    store = FeatureStore(features_dir)
    encoder.check_features(store.settings)
    ensure_split(split_dir, store.tracks, store.fingerprint, settings.seed, settings.val_fraction, settings.split_by)
    meta = read_meta(source, KIND, FORMAT_VERSION)
    extra = dict(meta.extra)
    extra["adopted_from"] = source_label(spec, source)
    extra["trained_on_these_features"] = False
    with staged_dir(Path(model_dir)) as staging:
        shutil.copy2(source / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        if (source / "CREDITS.md").is_file():
            shutil.copy2(source / "CREDITS.md", staging / "CREDITS.md")
        if encoder.companion is not None:
            _copy_model(source / COMPANION_DIR, staging / COMPANION_DIR)
        write_meta(staging, KIND, FORMAT_VERSION, meta.config, meta.inputs, extra, fingerprint=meta.fingerprint)
    return Encoder.load(Path(model_dir))


def attach_companion(model_dir: Path, companion_spec: str, description: str = "") -> Encoder:
    """Give the model in ``model_dir`` a companion (see ``training.model``): a copy of the model ``companion_spec``
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
        _copy_model(source, staging / COMPANION_DIR)
        write_meta(staging, KIND, FORMAT_VERSION, meta.config, meta.inputs, extra, fingerprint=fingerprint)
    return Encoder.load(model_dir)


def _copy_model(source: Path, target: Path) -> None:
    """A model's weights and meta.json (and credits): what loading it needs, not its training state."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, "CREDITS.md", "meta.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def load_init_weights(spec: str, settings: TrainSettings, feature_settings: Any) -> tuple[dict[str, Any], str]:
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
