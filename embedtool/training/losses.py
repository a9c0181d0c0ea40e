"""Triplet losses, with optional in-batch negative mining.

- ``thesis``: embeddings L2-normalised, squared Euclidean distances on the unit sphere,
  ``max(0, d(a,p) - d(a,n) + margin)`` averaged over the active (non-zero) triplets only.
- ``tile2vec``: raw (unnormalised) embeddings, plain Euclidean distances, the hinge averaged over all
  triplets, plus ``norm_penalty`` times the mean L2 norm of the three embeddings (Tile2Vec's replacement
  for normalisation).

Mining replaces each triplet's negative by another segment of the batch (any positive or negative of the
batch whose track differs from the anchor's, or the triplet's own negative): ``hard`` takes the closest one;
``semi-hard`` the closest one farther than the positive, else the farthest (FaceNet / TF-Addons rule).
Triplet accuracy is always measured on the drawn triplets: the share with d(a,p) < d(a,n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _distances(x: torch.Tensor, y: torch.Tensor, squared: bool) -> torch.Tensor:
    """Pairwise distances (len(x), len(y))."""
    d2 = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)
    return d2 if squared else (d2 + 1e-12).sqrt()


def _paired(x: torch.Tensor, y: torch.Tensor, squared: bool) -> torch.Tensor:
    d2 = (x - y).pow(2).sum(1)
    return d2 if squared else (d2 + 1e-12).sqrt()


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    kind: str = "thesis",
    margin: float = 1.0,
    norm_penalty: float = 0.0,
    mining: str = "none",
    anchor_track: torch.Tensor | None = None,
    negative_track: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss over a batch of (B, dim) embeddings and statistics for logging; see the module doc."""
    raw = (anchor, positive, negative)
    if kind == "thesis":
        anchor, positive, negative = (F.normalize(t.float(), dim=1) for t in raw)
        squared = True
    elif kind == "tile2vec":
        anchor, positive, negative = (t.float() for t in raw)
        squared = False
    else:
        raise ValueError(f"unknown loss {kind!r}")
    d_ap = _paired(anchor, positive, squared)
    d_an_drawn = _paired(anchor, negative, squared)
    d_an = d_an_drawn
    if mining != "none":
        if anchor_track is None or negative_track is None:
            raise ValueError("mining needs the anchors' and negatives' track indices")
        d_an = _mined(anchor, positive, negative, d_ap, d_an_drawn, anchor_track, negative_track, mining, squared)
    hinge = F.relu(d_ap - d_an + margin)
    if kind == "thesis":
        active = (hinge > 0).sum()
        loss = hinge.sum() / active.clamp_min(1)
    else:
        loss = hinge.mean()
        if norm_penalty > 0:
            norms = sum(t.float().norm(dim=1).mean() for t in raw)
            loss = loss + norm_penalty * norms
    stats = {
        "loss": float(loss.detach()),
        "triplet_accuracy": float((d_ap < d_an_drawn).float().mean()),
        "active_fraction": float((hinge > 0).float().mean()),
        "d_ap": float(d_ap.detach().mean()),
        "d_an": float(d_an_drawn.detach().mean()),
    }
    return loss, stats


def _mined(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    d_ap: torch.Tensor,
    d_an_drawn: torch.Tensor,
    anchor_track: torch.Tensor,
    negative_track: torch.Tensor,
    mining: str,
    squared: bool,
) -> torch.Tensor:
    b = anchor.shape[0]
    pool = torch.cat([positive, negative])
    pool_track = torch.cat([anchor_track, negative_track]).to(anchor.device)
    dist = _distances(anchor, pool, squared)
    valid = pool_track[None, :] != anchor_track.to(anchor.device)[:, None]
    own = torch.arange(b, device=anchor.device)
    valid[own, b + own] = True  # the drawn negative is always a candidate (it may be a same-track-far one)
    inf = torch.finfo(dist.dtype).max
    if mining == "hard":
        return dist.masked_fill(~valid, inf).min(1).values
    if mining == "semi-hard":
        outside = valid & (dist > d_ap[:, None])
        closest_outside = dist.masked_fill(~outside, inf).min(1).values
        farthest_inside = dist.masked_fill(~valid, -inf).max(1).values
        return torch.where(outside.any(1), closest_outside, farthest_inside)
    raise ValueError(f"unknown mining {mining!r}")
