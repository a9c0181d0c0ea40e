"""The identify decision: a query's **confidence** and the threshold it must pass, by query length.

``match_confidence`` is how much nearer the best track is than the runner-up, ``(1 - runner-up score) /
(1 - best score)`` — the ratio test of feature matching (Lowe) on cosine distances; ``query.calibrate`` explains
why and how the thresholds are calibrated at index time, one per excerpt length; ``threshold_for`` interpolates
them for a query's duration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STATISTIC = "confidence"  # what the threshold applies to; indexes built before it hold a best-score threshold
MAX_CONFIDENCE = 1000.0  # an exact copy (best score 1) would divide by zero


def match_confidence(best: float, runner_up: float | None) -> float:
    """How much nearer the best track is than the runner-up (a ratio of cosine distances; see the module doc).
    Without a runner-up (a one-track library) the distance to nothing, 1, takes its place."""
    runner_up = 0.0 if runner_up is None else runner_up
    return float(min(MAX_CONFIDENCE, (1.0 - runner_up) / max(1.0 - best, 1.0 / MAX_CONFIDENCE)))


def threshold_for(by_length: list[dict[str, Any]], duration_s: float) -> float:
    """The threshold for a query of ``duration_s``: linear in log-duration between calibrated lengths, the
    nearest one's outside them."""
    points = sorted((float(e["excerpt_s"]), float(e["threshold"])) for e in by_length)
    lengths = np.log([p[0] for p in points])
    return float(np.interp(np.log(max(duration_s, 1e-3)), lengths, [p[1] for p in points]))
