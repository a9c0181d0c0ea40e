"""musicnn features for bench_suite, run under the separate musicnn venv (``bench/musicnn_setup.sh``).

    ~/.cache/embedtool-musicnn/venv/bin/python bench/musicnn_features.py LIST.tsv OUT.npz

LIST.tsv has a header ``track_id<TAB>path`` and one row per file. For each file: musicnn's ``MSD_musicnn`` model's
``penultimate`` layer (200 units) on its 3 s patches, mean-pooled over the file -> one float32 vector. OUT.npz maps
track_id -> vector; it is written atomically, at the end and about once a minute on the way (so an interrupted run
keeps what it computed). A file that fails to decode is reported on stderr and left out; the run goes on.

It does what ``musicnn.extractor.extractor(path, model="MSD_musicnn", extract_features=True)`` does (librosa load
at 16 kHz mono, its float16 log-Mel, non-overlapping 3 s patches, the last partial patch dropped, the graph in
inference mode), with four differences:

- the graph is built and the checkpoint restored once, not per file, and strictly (the extractor's bare ``except``
  around ``Saver.restore`` would carry on with random weights);
- all patches' ``penultimate``: musicnn 0.1.0's extractor returns the *first* patch's row for every patch after the
  first (its loop over later batches concatenates ``penultimate_``, the first batch's value, not ``backend_``), so
  its mean over time would be the first 3 s only;
- audio shorter than one patch is zero-padded to 3 s: the extractor fails on it (no patch: ``UnboundLocalError``),
  and the suite's one-shot sounds are often that short;
- patches go through the graph 16 at a time (batch norm in inference mode: the figures do not depend on it).

It runs TensorFlow on one thread. It must not import embedtool, torch or pyarrow (they are not in that venv).
"""

from __future__ import annotations

import os

for _name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

MODEL = "MSD_musicnn"
INPUT_SECONDS = 3  # the models' training input length (the extractor's default input_length)
BATCH = 16  # patches per session run (batch norm runs in inference mode: patches do not interact)
SAVE_EVERY_S = 60.0


def log(message: str) -> None:
    print(f"[musicnn_features] {message}", file=sys.stderr, flush=True)


class Model:
    """The MSD_musicnn graph, restored once; ``penultimate(path)`` -> the file's mean-pooled 200-d vector."""

    def __init__(self) -> None:
        with warnings.catch_warnings():  # tf.compat.v1.layers' deprecation warnings, one per layer
            warnings.simplefilter("ignore")
            self._build()

    def _build(self) -> None:
        import librosa
        import tensorflow as tf
        from musicnn import configuration as config
        from musicnn import models

        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already initialised (a second Model in one process): the session's own
            pass
        tf.compat.v1.disable_eager_execution()
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        self.librosa, self.config = librosa, config
        self.n_frames = (
            librosa.time_to_frames(INPUT_SECONDS, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP) + 1
        )
        graph = tf.Graph()
        with graph.as_default():
            with tf.name_scope("model"):  # as the extractor builds it
                self.x = tf.compat.v1.placeholder(tf.float32, [None, self.n_frames, config.N_MELS])
                self.is_training = tf.compat.v1.placeholder(tf.bool)
                outputs = models.define_model(self.x, self.is_training, MODEL, len(config.MSD_LABELS))
                self.output = outputs[-1]  # penultimate
            session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
            self.session = tf.compat.v1.Session(graph=graph, config=session_config)
            checkpoint = str(Path(models.__file__).parent / MODEL) + "/"
            tf.compat.v1.train.Saver().restore(self.session, checkpoint)  # raises when the weights do not load

    def penultimate(self, path: str) -> tuple[np.ndarray, float]:
        """The file's vector and its duration in seconds (before any padding)."""
        config, librosa = self.config, self.librosa
        with warnings.catch_warnings():  # librosa's audioread fallback warnings on a file soundfile cannot read
            warnings.simplefilter("ignore")
            audio, sr = librosa.load(path, sr=config.SR)
        if audio.size == 0:
            raise ValueError("decoded to no samples")
        seconds = audio.size / sr
        if audio.size < INPUT_SECONDS * sr:  # shorter than one patch: the extractor would fail (no patch at all)
            audio = np.pad(audio, (0, INPUT_SECONDS * sr - audio.size))
        mel = librosa.feature.melspectrogram(
            y=audio, sr=sr, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
        ).T
        mel = np.log10(10000 * mel.astype(np.float16) + 1)  # the extractor's float16 step, kept for fidelity
        starts = range(0, mel.shape[0] - self.n_frames + 1, self.n_frames)  # non-overlapping, last partial dropped
        patches = np.stack([mel[s : s + self.n_frames] for s in starts]).astype(np.float32)
        out = [
            self.session.run(self.output, feed_dict={self.x: patches[i : i + BATCH], self.is_training: False})
            for i in range(0, len(patches), BATCH)
        ]
        return np.concatenate(out).mean(axis=0).astype(np.float32), seconds


def save(vectors: dict[str, np.ndarray], out: Path) -> None:
    """np.savez to a temporary file beside ``out``, then os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **vectors)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    listing, out = Path(sys.argv[1]), Path(sys.argv[2])
    with open(listing, newline="") as f:
        rows = [(row["track_id"], row["path"]) for row in csv.DictReader(f, delimiter="\t")]
    started = time.perf_counter()
    model = Model()
    log(f"{MODEL} restored in {time.perf_counter() - started:.1f} s; {len(rows)} files")
    vectors: dict[str, np.ndarray] = {}
    failed, padded, audio_s = 0, 0, 0.0
    last_save = last_log = time.perf_counter()
    for i, (track_id, path) in enumerate(rows, 1):
        try:
            vectors[track_id], seconds = model.penultimate(path)
        except Exception as exc:  # undecodable or broken file: report, go on
            failed += 1
            log(f"FAILED {path}: {type(exc).__name__}: {exc}")
            continue
        audio_s += seconds
        padded += seconds < INPUT_SECONDS
        now = time.perf_counter()
        if now - last_save > SAVE_EVERY_S:
            save(vectors, out)
            last_save = now
        if now - last_log > 30 or i == len(rows):
            log(f"{i}/{len(rows)} files ({audio_s / 60:.1f} min of audio) in {now - started:.0f} s")
            last_log = now
    save(vectors, out)
    log(
        f"done: {len(vectors)} vectors ({padded} padded to {INPUT_SECONDS} s), {failed} failed, "
        f"{time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
