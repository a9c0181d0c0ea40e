"""The chain on the bundled audio gives what the code gave before the re-layering (see tests/golden_chain.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from golden_chain import GOLDEN, run_chain


def test_chain_on_bundled_audio_matches_the_recording_made_before_the_relayering(tmp_path: Path) -> None:
    golden = np.load(GOLDEN)
    now = run_chain(tmp_path)
    assert list(now["track_ids"]) == list(golden["track_ids"])
    assert str(now["mel_dtype"]) == str(golden["mel_dtype"])
    changed = [t for t, a, b in zip(now["track_ids"], now["mel_sha256"], golden["mel_sha256"], strict=True) if a != b]
    assert not changed, f"features of {len(changed)} track(s) are no longer byte-identical, e.g. {changed[:3]}"
    for name in ("general", "untrained"):
        for key in ("segments_shape", "descriptors_shape", "starts"):
            np.testing.assert_array_equal(now[f"{name}_{key}"], golden[f"{name}_{key}"], err_msg=f"{name}_{key}")
        for key in ("segments", "segments_first", "tracks", "descriptors"):
            np.testing.assert_allclose(
                now[f"{name}_{key}"], golden[f"{name}_{key}"], rtol=1e-4, atol=1e-5, err_msg=f"{name}_{key}"
            )
