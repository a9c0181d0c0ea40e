"""embedtool classify: the plain-array classifier, grouped evaluation, the artefact, predictions, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from factories import extract_features, flat, make_class_corpus, run_cli

from embedtool.analysis.classifier import FALLBACK_C, LinearClassifier, fit_classifier
from embedtool.analysis.classifier_store import SavedClassifier, predict_files
from embedtool.analysis.classify import run_classify
from embedtool.analysis.folds import C_GRID, SMALL_HELD_OUT_TRACKS, choose_C, evaluate_classifier, split_folds
from embedtool.analysis.labelled import LabelledData
from embedtool.analysis.options import ClassifyOptions
from embedtool.artefacts import read_meta, staged_dir
from embedtool.embedding.store import EmbeddingStore, EmbeddingWriter
from embedtool.errors import ConfigError, IncompatibleArtefactError, InputError, MissingArtefactError


def write_store(
    directory: Path,
    labels: list[str | None],
    groups: list[str | None] | None = None,
    segments: int = 4,
    spread: float = 0.6,
    model: str = "model-fp",
    seed: int = 0,
    descriptors: bool = True,
) -> Path:
    """A real embeddings artefact: one track per entry of ``labels``, segments scattered around its label's centre;
    a track's descriptor is its mean segment vector with 8 columns of noise appended (as an export without
    descriptors when ``descriptors`` is false)."""
    rng = np.random.default_rng(seed)
    dim = 16
    centres = {lab: rng.standard_normal(dim) for lab in sorted({str(x) for x in labels})}
    with staged_dir(directory) as stage:
        writer = EmbeddingWriter(stage, dim)
        for i, lab in enumerate(labels):
            v = centres[str(lab)] + spread * rng.standard_normal((segments, dim))
            starts = np.arange(segments) * 0.5
            writer.add_track(
                {"track_id": f"{i:04d}" + "a" * 12, "path": f"/lib/{i}.wav", "label": lab,
                 "group": groups[i] if groups else None, "duration_s": 0.5 * segments + 0.5},
                starts, starts + 1.0, v / np.linalg.norm(v, axis=1, keepdims=True),
                np.concatenate([v.mean(axis=0), rng.standard_normal(8)]) if descriptors else None,
            )  # fmt: skip
        writer.finish({"hop_frames": 50, "hop_s": 0.5}, {"features": "feat-fp", "model": model})
    return directory


def write_split(split_dir: Path, store_dir: Path, val_fraction: float = 0.3, split_by: str = "group") -> dict:
    from embedtool.training.splits import ensure_split

    tracks = EmbeddingStore(store_dir).tracks
    assignments, _ = ensure_split(split_dir, tracks, "feat-fp", 0, val_fraction, split_by)
    return assignments


THREE = [f"c{i % 3}" for i in range(18)]
GROUPS = [f"g{i % 9}" for i in range(18)]  # two tracks of one label per group


def test_linear_classifier_equals_scikit_learn_and_round_trips(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    for n_classes in (2, 4):
        y = np.repeat([f"k{i}" for i in range(n_classes)], 10)
        x = rng.standard_normal((len(y), 5)) + np.repeat(np.arange(n_classes), 10)[:, None]
        clf = fit_classifier(x, y, ClassifyOptions(class_weight="none"))
        scaler = StandardScaler().fit(x)
        ref = LogisticRegression(max_iter=2000).fit(scaler.transform(x), y)
        assert clf.classes == list(ref.classes_)
        assert np.allclose(clf.predict_proba(x), ref.predict_proba(scaler.transform(x)), atol=1e-5)
        clf.save(tmp_path / f"c{n_classes}")
        again = LinearClassifier.load(tmp_path / f"c{n_classes}")
        assert again.classes == clf.classes
        assert np.allclose(again.predict_proba(x), clf.predict_proba(x), atol=1e-4)
    with pytest.raises(IncompatibleArtefactError, match="expects 5-dimensional"):
        clf.predict_proba(np.zeros((1, 3)))


def test_grouped_cv_keeps_groups_apart_and_separates_classes(tmp_path: Path) -> None:
    store = write_store(tmp_path / "emb", THREE, GROUPS)
    data = LabelledData.from_store(EmbeddingStore(store), segments=True)
    options = ClassifyOptions(cv=3)
    scheme, folds = split_folds(data, None, options)
    assert scheme == "cv-3" and len(folds) == 3
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(18))  # every track tested exactly once
    for train, test in folds:
        assert not {data.groups[i] for i in train} & {data.groups[i] for i in test}
    for level in ("track", "segment"):
        ev = evaluate_classifier(data, ClassifyOptions(cv=3, level=level))
        assert ev.metrics["macro_f1"] >= 0.9 and ev.metrics["n"] == 18
        assert np.asarray(ev.metrics["confusion"]).sum() == 18
        for p in ev.predictions:
            assert sum(p["probabilities"].values()) == pytest.approx(1.0)


def test_cv_by_track_folds_tracks_of_one_group_apart(tmp_path: Path) -> None:
    data = LabelledData.from_store(EmbeddingStore(write_store(tmp_path / "emb", THREE, GROUPS)))

    def straddling(cv_by: str) -> set[str]:
        """Groups with tracks on both sides of some fold."""
        _, folds = split_folds(data, None, ClassifyOptions(cv=3, cv_by=cv_by))
        assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(18))
        return {g for train, test in folds for g in {data.groups[i] for i in test} & {data.groups[i] for i in train}}

    assert straddling("group") == set()
    assert straddling("track")  # each track its own group: the two tracks of a group can land in different folds
    # a label confined to one group cannot be folded by group, but can be by track
    confined = LabelledData.from_store(
        EmbeddingStore(write_store(tmp_path / "confined", ["a"] * 4 + ["b"] * 4, ["g1", "g2", "g3", "g4"] + ["gb"] * 4))
    )
    with pytest.raises(InputError, match=r"fold by track \(--cv-by track\)"):
        evaluate_classifier(confined, ClassifyOptions(cv=2))
    ev = evaluate_classifier(confined, ClassifyOptions(cv=2, cv_by="track"))
    assert ev.scheme == "cv-2" and ev.metrics["n"] == 8
    with pytest.raises(ConfigError, match="classify.cv_by must be 'group' or 'track'"):
        ClassifyOptions(cv_by="album").validate()  # type: ignore[arg-type]


def test_auto_C_is_chosen_on_the_training_tracks_alone(tmp_path: Path) -> None:
    data = LabelledData.from_store(EmbeddingStore(write_store(tmp_path / "emb", THREE, GROUPS)))
    rows = np.arange(12)
    chosen = choose_C(data, rows, ClassifyOptions())
    assert chosen == C_GRID[0]  # separable classes: every C scores 1.0 and the tie goes to the strongest penalty
    # Tracks outside the training rows cannot steer the choice: replacing their vectors changes nothing ...
    scrambled = data.vectors.copy()
    scrambled[12:] = np.random.default_rng(5).standard_normal(scrambled[12:].shape)
    assert choose_C(data.with_vectors(scrambled), rows, ClassifyOptions()) == chosen
    # ... while noise in the training tracks does: with labels unrelated to the vectors nothing is separable.
    noisy = data.with_vectors(np.random.default_rng(6).standard_normal(data.vectors.shape))
    assert choose_C(noisy, rows, ClassifyOptions()) in C_GRID
    assert choose_C(data, rows, ClassifyOptions(C=0.5)) == 0.5
    assert choose_C(data, np.array([0, 1, 2]), ClassifyOptions()) == FALLBACK_C  # one track per label: no inner CV
    ev = evaluate_classifier(data, ClassifyOptions(cv=3))
    assert [f["C"] for f in ev.folds] == [C_GRID[0]] * 3 and ev.metrics["macro_f1"] >= 0.9
    with pytest.raises(ConfigError, match="positive or 'auto'"):
        ClassifyOptions(C=-1.0).validate()


def test_run_classify_on_the_persisted_split(tmp_path: Path) -> None:
    store_dir = write_store(tmp_path / "emb", THREE, GROUPS)
    split = write_split(tmp_path / "split", store_dir)
    out = tmp_path / "classifier"
    result = run_classify(store_dir, out, ClassifyOptions(small_split="keep"), split_dir=tmp_path / "split")
    val = [t for t, s in split.items() if s == "val"]
    assert result.evaluation.scheme == "split" and result.evaluation.note is None
    assert sorted(p["track_id"] for p in result.evaluation.predictions) == sorted(val)
    assert result.evaluation.metrics["macro_f1"] >= 0.9
    meta = read_meta(out, "classifier")
    assert meta.inputs == {"embeddings": EmbeddingStore(store_dir).fingerprint, "model": "model-fp"}
    assert meta.extra["classes"] == ["c0", "c1", "c2"] and meta.extra["trained_on_tracks"] == 18
    for name in ("classes.json", "coef.npy", "intercept.npy", "scaler_mean.npy", "scaler_scale.npy",
                 "evaluation.json", "confusion.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not list(out.glob("*.pkl"))
    saved = SavedClassifier(out)
    assert saved.reads_descriptors and saved.classifier.dim == 24  # the default reads track descriptors
    descriptors = EmbeddingStore(store_dir).track_descriptors()
    assert saved.classifier.predict(descriptors) == THREE  # refitted on all tracks: separable classes come back
    saved.check_embeddings(EmbeddingStore(store_dir))
    on_embeddings = run_classify(
        store_dir,
        tmp_path / "c-emb",
        ClassifyOptions(features="embeddings", small_split="keep"),
        split_dir=tmp_path / "split",
    )
    assert on_embeddings.classifier.dim == 16 and on_embeddings.evaluation.metrics["macro_f1"] >= 0.9
    assert SavedClassifier(tmp_path / "c-emb").classifier.predict(EmbeddingStore(store_dir).track_vectors()) == THREE
    # an export without descriptors: a clear error naming the command that makes them
    old = write_store(tmp_path / "old", THREE, GROUPS, descriptors=False)
    with pytest.raises(MissingArtefactError, match=r"no track descriptors .* `embedtool embed`"):
        run_classify(old, tmp_path / "c-old", ClassifyOptions(cv=3))
    with pytest.raises(IncompatibleArtefactError, match="dim"):
        saved.check_embeddings(EmbeddingStore(old))
    # without refitting, the classifier is the one evaluated: trained on the training tracks only
    kept = run_classify(
        store_dir, out, ClassifyOptions(refit_all=False, small_split="keep"), split_dir=tmp_path / "split"
    )
    assert kept.trained_on == len(split) - len(val)


def test_a_split_too_small_to_judge_by_switches_to_grouped_cv_and_says_so(tmp_path: Path) -> None:
    store_dir = write_store(tmp_path / "emb", THREE, GROUPS)
    split = write_split(tmp_path / "split", store_dir)
    held_out = sum(s == "val" for s in split.values())
    assert held_out < SMALL_HELD_OUT_TRACKS  # 18 tracks: a few held out, 1.000 or 0.000 by chance
    result = run_classify(store_dir, tmp_path / "c", ClassifyOptions(), split_dir=tmp_path / "split")
    ev = result.evaluation
    assert ev.scheme.startswith("cv-") and int(ev.scheme[3:]) >= 2
    assert ev.note is not None and f"holds out only {held_out} labelled track(s)" in ev.note
    assert len(ev.predictions) == len(THREE)  # every labelled track tested once
    assert json.loads((tmp_path / "c" / "evaluation.json").read_text())["note"] == ev.note


def test_classify_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="No labelled tracks"):
        LabelledData.from_store(EmbeddingStore(write_store(tmp_path / "none", [None] * 4)))
    with pytest.raises(InputError, match="Only one label"):
        LabelledData.from_store(EmbeddingStore(write_store(tmp_path / "one", ["a", "a", None])))
    few = EmbeddingStore(write_store(tmp_path / "few", ["a"] * 6 + ["b"] * 2))
    with pytest.raises(InputError, match=r"--cv 3 needs at least 3 tracks per label; too few for: b \(2\)"):
        evaluate_classifier(LabelledData.from_store(few), ClassifyOptions(cv=3))
    # a label whose tracks all share one group cannot be tested on unseen groups
    confined = EmbeddingStore(
        write_store(tmp_path / "confined", ["a"] * 4 + ["b"] * 4, ["g1", "g2", "g3", "g4"] + ["gb"] * 4)
    )
    with pytest.raises(InputError, match="holds out every track of label"):
        evaluate_classifier(LabelledData.from_store(confined), ClassifyOptions(cv=2))
    with pytest.raises(InputError, match="at least 6 groups of tracks, but the labelled tracks form only 5"):
        evaluate_classifier(LabelledData.from_store(confined), ClassifyOptions(cv=6))
    # persisted split, kept as it is: a label whose only tracks are in validation
    data = LabelledData.from_store(few)
    split = {t: "train" for t in data.track_ids[:6]} | {t: "val" for t in data.track_ids[6:]}
    keep = ClassifyOptions(small_split="keep")
    with pytest.raises(InputError, match=r"no training track for b \(2 track\(s\), all in validation\)"):
        evaluate_classifier(data, keep, split)
    with pytest.raises(InputError, match="no labelled validation tracks"):
        evaluate_classifier(data, keep, dict.fromkeys(data.track_ids, "train"))
    # ... which grouped cross-validation, the default for a split this small, gets round when the groups allow
    rescued = evaluate_classifier(data, ClassifyOptions(), split)
    assert rescued.scheme.startswith("cv-") and rescued.note and len(rescued.predictions) == len(data.track_ids)
    with pytest.raises(MissingArtefactError, match="embedtool train"):
        run_classify(tmp_path / "few", tmp_path / "clf", ClassifyOptions(), split_dir=tmp_path / "no-split")
    with pytest.raises(ConfigError, match="classify.cv"):
        ClassifyOptions(cv=1).validate()
    # a classifier refuses embeddings of another model
    store_dir = write_store(tmp_path / "emb", THREE, GROUPS)
    run_classify(store_dir, tmp_path / "clf", ClassifyOptions(cv=3))
    other = write_store(tmp_path / "other", THREE, GROUPS, model="another-model")
    with pytest.raises(IncompatibleArtefactError, match="model: 'model-fp' != 'another-model'"):
        SavedClassifier(tmp_path / "clf").check_embeddings(EmbeddingStore(other))
    with pytest.raises(MissingArtefactError, match="embedtool classify"):
        SavedClassifier(tmp_path / "nothing")


def test_classify_cli(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write_store(ws / "embeddings", THREE, GROUPS)
    res = run_cli("-w", ws, "-q", "classify", "--cv", "3", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["scheme"] == "cv-3" and data["macro_f1"] >= 0.9 and data["classes"] == ["c0", "c1", "c2"]
    res = run_cli("-w", ws, "-q", "classify", "--cv", "3", "--level", "segment")
    assert res.exit_code == 0, res.output
    assert "macro-F1" in res.stdout and "confusion matrix" in res.stdout
    res = run_cli("-w", ws, "-q", "classify", "--cv", "3", "--c", "0.5", "--json")
    assert res.exit_code == 0, res.output
    assert [f["C"] for f in json.loads(res.stdout)["folds"]] == [0.5] * 3
    res = run_cli("-w", ws, "-q", "classify", "--cv", "3", "--C", "0.25", "--json")  # the old spelling, hidden
    assert res.exit_code == 0, res.output
    assert [f["C"] for f in json.loads(res.stdout)["folds"]] == [0.25] * 3
    res = run_cli("-w", ws, "-q", "classify", "--cv", "3", "--c", "lots")
    assert res.exit_code == 2 and "must be 'auto' or a number, not 'lots'" in res.output
    res = run_cli("-w", ws, "-q", "classify", "--cv", "30")
    assert res.exit_code == 1 and "--cv 30 needs at least 30 groups" in res.output
    assert "use a smaller --cv or --cv-by track" in flat(res.output)
    res = run_cli("-w", ws, "-q", "classify", "--cv", "6", "--cv-by", "track")
    assert res.exit_code == 0, res.output
    assert "6-fold cross-validation by track" in flat(res.stdout)
    res = run_cli("-w", ws, "-q", "classify", "--cv", "3", "--cv-by", "album")
    assert res.exit_code == 2
    res = run_cli("-w", ws, "-q", "classify", "--cv", "1")
    assert res.exit_code == 2


def test_predict_query_files_through_the_model(tmp_path: Path) -> None:
    """Real audio -> features -> (untrained) encoder -> embeddings -> classifier -> predictions for files."""
    from embedtool.audio.settings import FeatureSettings
    from embedtool.embedding.export import export_embeddings
    from embedtool.embedding.options import EmbedOptions
    from embedtool.model.encoder import Encoder
    from embedtool.model.settings import TrainSettings

    corpus = make_class_corpus(tmp_path / "corpus", classes=2, per_class=4, seconds=2.0, seed=3)
    fs = FeatureSettings()
    extract_features(corpus, tmp_path / "features", fs)
    encoder = Encoder.untrained(fs, TrainSettings(width=0.125, embedding_dim=16, segment_seconds=0.5), seed=0)
    export_embeddings(tmp_path / "features", encoder, tmp_path / "emb", EmbedOptions(device="cpu"))
    run_classify(tmp_path / "emb", tmp_path / "clf", ClassifyOptions(cv=2))
    files = sorted(corpus.rglob("*.wav"))
    predictions = predict_files(tmp_path / "clf", tmp_path / "no-model", files, segments=True, encoder=encoder)
    assert len(predictions) == len(files)
    store = EmbeddingStore(tmp_path / "emb")
    saved = SavedClassifier(tmp_path / "clf")
    by_path = {t["path"]: row for row, t in enumerate(store.tracks)}
    for p, f in zip(predictions, files, strict=True):
        assert set(p.probabilities) == {"noise_high", "tone_low"}
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert p.segments and all(0 <= s["start_s"] < s["end_s"] <= p.duration_s + 0.02 for s in p.segments)
        # the query path gives the same answer as the stored track descriptor of the same file
        stored = saved.classifier.predict_proba(store.track_descriptors()[by_path[str(f.resolve())]])[0]
        assert np.allclose(list(p.probabilities.values()), stored, atol=0.05)
    other = Encoder.untrained(fs, TrainSettings(width=0.125, embedding_dim=16, segment_seconds=0.5), seed=1)
    other.fingerprint = "untrained-1"
    with pytest.raises(IncompatibleArtefactError, match="classifier vs model"):
        predict_files(tmp_path / "clf", tmp_path / "no-model", files[:1], encoder=other)
    with pytest.raises(InputError, match="not found"):
        predict_files(tmp_path / "clf", tmp_path / "no-model", [tmp_path / "missing.wav"], encoder=encoder)
