"""embedtool evaluate (and classify/cluster) on the whole chain: generated classes -> extract -> a tiny model
trained for a few seconds -> embeddings + index -> report. Plus the evaluation parts on their own."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from factories import CHAIN_CLASSES, CHAIN_PER_CLASS, run_cli, write_signal

from embedtool.analysis.baselines import baseline_vector, mfcc
from embedtool.analysis.classify import run_classify
from embedtool.analysis.cluster import run_cluster
from embedtool.analysis.evaluate import run_evaluate
from embedtool.analysis.options import DEGRADATIONS, ClassifyOptions, ClusterOptions, EvaluateOptions
from embedtool.analysis.retrieval import precision_at_k
from embedtool.analysis.robustness import degrade, reidentification, run_robustness
from embedtool.artefacts import read_meta
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import ConfigError, MissingArtefactError
from embedtool.workspace import Workspace

# The session's trained workspace (conftest.py): generated classes, a tiny model, embeddings and index.
CLASSES = CHAIN_CLASSES
PER_CLASS = CHAIN_PER_CLASS


@pytest.fixture
def workspace(trained_workspace_copy: Workspace) -> Workspace:
    """The session's trained workspace, copied: evaluate, classify and cluster write into it."""
    return trained_workspace_copy


def _in_unit(value: float | None) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_evaluate_writes_every_file_with_valid_values(workspace: Workspace) -> None:
    options = EvaluateOptions(name="t1", k=(1, 3), excerpt_seconds=(1.0, 3.0), excerpts=3)
    result = run_evaluate(workspace, options)
    out = workspace.reports / "t1"
    assert result.directory == out
    meta = read_meta(out, "report")
    report = json.loads((out / "report.json").read_text())
    assert meta.inputs["embeddings"] == report["inputs"]["embeddings"]
    assert report["labelled_tracks"] == CLASSES * PER_CLASS
    assert set(report["systems"]) == {"embeddings", "mfcc", "untrained", "general"}  # baselines, same run
    val_tracks = None
    for name, system in report["systems"].items():
        c = system["classification"]
        # 18 tracks: the persisted split holds out too few to judge by, so grouped CV tests every track, and says so
        assert c["scheme"].startswith("cv-") and "too few to judge by" in c["note"]
        assert _in_unit(c["accuracy"]) and _in_unit(c["macro_f1"]), name
        # the same held-out tracks for every system
        tracks = sorted(p["track_id"] for p in c["predictions"])
        val_tracks = val_tracks or tracks
        assert tracks == val_tracks
        assert np.asarray(c["confusion"]).sum() == len(tracks)
        assert all(_in_unit(v) for v in system["retrieval"].values()) and set(system["retrieval"]) == {"p@1", "p@3"}
        cl = system["clustering"]
        # k chosen as `embedtool cluster -k auto` chooses it (silhouette), not set to the number of labels
        assert cl["criterion"] == "silhouette" and 2 <= cl["k"] <= 12 and sum(cl["sizes"]) == CLASSES * PER_CLASS
        assert _in_unit(cl["purity"]) and _in_unit(cl["nmi"]) and -1 <= cl["ari"] <= 1
    emb = report["systems"]["embeddings"]
    assert emb["classification"]["macro_f1"] >= 0.8
    assert emb["clustering"]["purity"] >= 0.8
    rob = report["robustness"]
    assert rob["degradations"] == list(DEGRADATIONS) and rob["lengths"] == [1.0, 3.0]
    assert rob["queries"] == 3 * 2 * len(DEGRADATIONS)
    assert len(rob["cells"]) == 2 * len(DEGRADATIONS)
    for cell in rob["cells"]:
        assert cell["n"] == 3
        assert _in_unit(cell["top1"]) and _in_unit(cell["top5"]) and cell["top1"] <= cell["top5"]
    clean3 = next(c for c in rob["cells"] if c["seconds"] == 3.0 and c["degradation"] == "clean")
    assert clean3["top5"] == 1.0  # an undegraded 3 s excerpt of a library track is found
    for png in report["figures"].values():
        assert (out / png).stat().st_size > 1000, png
    assert {"map", "comparison", "robustness", "confusion_embeddings", "confusion_mfcc"} <= set(report["figures"])
    markdown = (out / "report.md").read_text()
    for name in ("embeddings", "mfcc", "untrained", "Re-identification", "![map](map.png)", "track descriptors"):
        assert name in markdown
    # which model is which: this workspace's model was trained on its audio (an adopted one would say so)
    assert report["model_origin"] == "a model trained on this audio"
    assert "**embeddings** (a model trained on this audio)" in markdown
    assert "too few to judge by" in markdown  # the small split's switch to grouped CV is in the report too
    vectors = np.loadtxt(out / "projector" / "vectors.tsv", delimiter="\t")
    assert vectors.shape == (CLASSES * PER_CLASS, 32)
    with (out / "projector" / "metadata.tsv").open() as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["track_id", "label", "group", "cluster", "path"] and len(rows) == 1 + CLASSES * PER_CLASS


def test_the_bundled_baseline_export_is_kept_and_reused(workspace: Workspace) -> None:
    options = EvaluateOptions(name="reuse", k=(1,), robustness=False, untrained_baseline=False)
    run_evaluate(workspace, options)
    kept = workspace.reports / ".baselines" / "general" / "embeddings"
    made = (kept / "meta.json").stat().st_mtime_ns
    assert EmbeddingStore(kept).descriptor_dim == 480 + 40  # the bundled network's descriptors + MFCC stats
    result = run_evaluate(workspace, options)
    assert (kept / "meta.json").stat().st_mtime_ns == made  # an unchanged library is not embedded again
    assert "general" in json.loads((result.directory / "report.json").read_text())["systems"]


def test_classify_and_cluster_on_the_trained_chain(workspace: Workspace) -> None:
    result = run_classify(workspace.embeddings, workspace.classifier, ClassifyOptions(cv=3), split_dir=workspace.split)
    assert result.evaluation.metrics["macro_f1"] >= 0.8
    clusters = run_cluster(workspace.embeddings, workspace.clusters, ClusterOptions(k=str(CLASSES)))
    assert clusters.agreement["purity"] >= 0.8
    from embedtool.analysis.classifier_store import predict_files

    some = [Path(t["path"]) for t in clusters.items[:: PER_CLASS * 2]]
    predictions = predict_files(workspace.classifier, workspace.model, some)
    truth = {t["path"]: t["label"] for t in clusters.items}
    assert sum(p.label == truth[p.path] for p in predictions) >= len(some) - 1

    res = run_cli("-w", workspace.root, "-q", "classify", some[0], "--segments", "--json")
    assert res.exit_code == 0, res.output
    (answer,) = json.loads(res.stdout)
    assert answer["label"] == predictions[0].label and len(answer["segments"]) >= 2
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)


def test_evaluate_cli_and_its_errors(workspace: Workspace, tmp_path: Path) -> None:
    args = [
        "-w",
        str(workspace.root),
        "-q",
        "evaluate",
        "--name",
        "cli",
        "--no-robustness",
        "--no-untrained",
        "--pretrained",
        "",
    ]
    res = run_cli(*args, "--cv", "3", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["systems"]) == {"embeddings", "mfcc"} and report["robustness"] is None
    assert report["classification_scheme"] == "cv-3"
    res = run_cli("-w", tmp_path / "empty", "evaluate")
    assert res.exit_code == 4 and "does not exist" in res.output  # a mistyped -w is named, not "run embed"
    res = run_cli("-w", workspace.root, "evaluate", "--name", "../x")
    assert res.exit_code == 2 and "plain folder name" in res.output


def test_evaluate_needs_the_index_for_robustness(trained_workspace: Workspace, tmp_path: Path) -> None:
    import shutil

    ws = Workspace(tmp_path / "ws")
    for stage in ("features", "split", "model", "embeddings"):  # every stage but the index
        shutil.copytree(getattr(trained_workspace, stage), getattr(ws, stage))
    with pytest.raises(MissingArtefactError, match="embedtool index"):
        run_evaluate(ws, EvaluateOptions(name="x", baselines=False, untrained_baseline=False))
    assert not (ws.reports / "x").exists()


def test_robustness_on_the_small_workspace_runs_fewer_queries(trained_workspace: Workspace) -> None:
    """18 tracks of 4 s: 9 excerpts a length instead of the configured 20 (18 before the library set the size)."""
    store = EmbeddingStore(trained_workspace.embeddings)
    options = EvaluateOptions(excerpt_seconds=(1.0, 3.0), degradations=("clean", "noise10"))
    assert options.excerpts == 20 and len(store.tracks) == CLASSES * PER_CLASS == 18
    stages: list[str] = []
    rob = run_robustness(trained_workspace, store, options, lambda stage, done, total: stages.append(stage))
    assert rob["excerpts_per_length"] == {"1.0": 9, "3.0": 9} and rob["queries"] == 9 * 2 * 2 < 18 * 2 * 2
    assert sum(c["n"] for c in rob["cells"]) == rob["queries"]
    assert stages[0].startswith("re-identification: 36 queries") and "about" in stages[-1]


# --- the parts on their own ----------------------------------------------------------------------------------


def test_the_robustness_test_is_sized_to_the_library_and_says_its_time_first() -> None:
    class Found:
        """A searcher that always finds the excerpt's track (the test counts queries, not accuracy)."""

        def __init__(self) -> None:
            self.queries = 0
            self.track = ""

        def query_samples(self, samples: np.ndarray, sample_rate: int, mode: str, k: int) -> SimpleNamespace:
            self.queries += 1
            return SimpleNamespace(matches=[{"track_id": self.track}], no_match=False)

    options = EvaluateOptions(excerpt_seconds=(1.0, 3.0), degradations=("clean", "gain"), excerpts=20)

    def run(n_tracks: int) -> tuple[dict, int, list[tuple[str, int, int]]]:
        tracks = [{"track_id": f"t{i}", "path": f"t{i}", "duration_s": 4.0} for i in range(n_tracks)]
        searcher = Found()
        calls: list[tuple[str, int, int]] = []

        def read(path: str, start_s: float, seconds: float) -> tuple[np.ndarray, int]:
            searcher.track = path
            return np.zeros(int(seconds * 8000), np.float32), 8000

        def progress(stage: str, done: int, total: int) -> None:
            calls.append((stage, done, total))

        rob = reidentification(searcher, tracks, options, read, progress)  # type: ignore[arg-type]
        return rob, searcher.queries, calls

    for n_tracks, per_length in ((100, 20), (40, 20), (18, 9), (12, 6), (5, 4), (3, 3)):
        rob, ran, calls = run(n_tracks)
        queries = per_length * 2 * 2
        assert rob["excerpts_per_length"] == {"1.0": per_length, "3.0": per_length}, n_tracks
        assert rob["queries"] == ran == queries
        assert all(c["n"] == per_length and c["top1"] == 1.0 for c in rob["cells"])
        # before the first query: how many; after it: how long
        assert calls[0] == (f"re-identification: {queries} queries ({2 * per_length} excerpts over 2 length(s) x "
                            "2 degradation(s))", 0, queries)  # fmt: skip
        assert "about" in calls[1][0] and "s a query" in calls[-1][0] and calls[-1][1:] == (queries, queries)


def test_precision_at_k_by_hand() -> None:
    # 1-D "embeddings" on a circle: a,a close together, b,b close together
    angles = np.array([0.0, 0.1, 2.0, 2.1, 0.05])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = ["a", "a", "b", "b", "b"]
    p = precision_at_k(x, labels, [1, 2])
    # nearest of 0: 4 (b) -> 0; of 1: 4 (b); of 2: 3 (b) -> 1; of 3: 2 -> 1; of 4: 0 or 1 (a) -> 0
    assert p["p@1"] == pytest.approx(2 / 5)
    # own track never counts: with one item per label, p@1 is 0 even though each is nearest to itself
    assert precision_at_k(np.eye(3), ["a", "b", "c"], [1])["p@1"] == 0.0
    # excluding the query's group removes the near-copy that would otherwise be found
    groups = ["g1", "g1", "g2", "g2", "g3"]
    assert precision_at_k(x, labels, [1], groups)["p@1"] < 1.0


def test_degradations_are_what_they_say() -> None:
    sr = 16000
    rng = np.random.default_rng(0)
    t = np.arange(sr * 2) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    options = EvaluateOptions()
    for snr in (20, 10, 0):
        y = degrade(x, sr, f"noise{snr}", rng, options)
        measured = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
        assert measured == pytest.approx(snr, abs=0.3)
    assert np.allclose(degrade(x, sr, "gain", rng, options), x * 10 ** (-12 / 20), atol=1e-6)
    fast = degrade(x, sr, "speed+3", rng, options)
    slow = degrade(x, sr, "speed-3", rng, options)
    assert len(fast) == pytest.approx(len(x) / 1.03, abs=2) and len(slow) == pytest.approx(len(x) / 0.97, abs=2)
    spectrum = np.abs(np.fft.rfft(fast))
    assert np.fft.rfftfreq(len(fast), 1 / sr)[np.argmax(spectrum)] == pytest.approx(440 * 1.03, abs=2)
    mp3 = degrade(x, sr, "mp3", rng, options)
    assert len(mp3) == len(x) and not np.array_equal(mp3, x)
    assert np.corrcoef(mp3[2000:-2000], x[2000:-2000])[0, 1] > 0.9  # lossy, yet the same signal
    assert degrade(x, sr, "clean", rng, options) is not None
    with pytest.raises(ConfigError, match="unknown reverb"):
        EvaluateOptions(degradations=("reverb",)).validate()


def test_mfcc_baseline_is_the_dct_of_log_mels() -> None:
    from scipy.fft import dct

    rng = np.random.default_rng(0)
    mel = rng.standard_normal((50, 64)).astype(np.float32)
    coeffs = mfcc(mel, 20)
    assert coeffs.shape == (50, 20)
    # the DCT-II with orthonormal scaling, computed by hand for one frame
    n = np.arange(64)
    basis = np.cos(np.pi * (n[None, :] + 0.5) * np.arange(20)[:, None] / 64) * np.sqrt(2 / 64)
    basis[0] /= np.sqrt(2)
    assert np.allclose(coeffs[3], basis @ mel[3], atol=1e-4)
    assert np.allclose(coeffs, dct(mel, type=2, norm="ortho", axis=1)[:, :20], atol=1e-5)
    vec = baseline_vector(mel, "mfcc", 20)
    assert vec.shape == (40,) and np.allclose(vec[:20], coeffs.mean(axis=0), atol=1e-5)
    assert baseline_vector(mel, "logmel").shape == (128,)


def test_mfcc_statistics_read_in_blocks_equal_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long track's statistics (the tail of its descriptor) are summed block by block; same figures."""
    import embedtool.features.mfcc as mfcc_module

    rng = np.random.default_rng(1)
    mel = (rng.standard_normal((1000, 64)) * 3 - 5).astype(np.float16)
    whole = baseline_vector(mel, "mfcc", 20)
    monkeypatch.setattr(mfcc_module, "BLOCK_FRAMES", 128)  # 8 blocks, the last one short
    assert np.allclose(mfcc_module.mfcc_statistics(mel), whole, atol=1e-4)


def test_excerpts_are_read_in_place_and_mp3_handles_any_rate(tmp_path: Path) -> None:
    from embedtool.analysis.robustness import read_excerpt

    sr = 22050
    ramp = np.linspace(-0.5, 0.5, sr * 3, dtype=np.float32)
    path = write_signal(tmp_path / "ramp.wav", ramp, sr)
    x, rate = read_excerpt(path, 1.0, 0.5)
    assert rate == sr and len(x) == sr // 2
    assert np.allclose(x, ramp[sr : sr + sr // 2], atol=1e-4)  # 16-bit PCM rounding
    rng = np.random.default_rng(0)
    odd = np.sin(2 * np.pi * 300 * np.arange(9000) / 9000).astype(np.float32) * 0.3  # 9 kHz: no MP3 rate
    y = degrade(odd, 9000, "mp3", rng, EvaluateOptions())
    assert abs(len(y) - len(odd)) <= 2 and np.corrcoef(y[1000:8000], odd[1000:8000])[0, 1] > 0.9
