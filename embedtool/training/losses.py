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

- ``ntxent``: the contrastive loss of SimCLR (NT-Xent, an InfoNCE) on the temporal-proximity pairs. Each anchor
  must pick its own positive out of every positive and negative of the batch (2B candidates), and each positive
  its own anchor out of every anchor and negative, by cosine similarity over ``temperature``; candidates from the
  anchor's own track other than its positive are left out (they are near it by construction, not negatives). The
  drawn negatives only add candidates, so one step costs what a triplet step costs. Under several processes
  each rank contrasts within its own share of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embedtool.model.settings import TrainSettings


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


def nt_xent_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    anchor_track: torch.Tensor,
    negative_track: torch.Tensor,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """NT-Xent over a batch of (B, dim) embeddings, symmetric in anchor and positive; see the module doc."""
    a, p, n = (F.normalize(t.float(), dim=1) for t in (anchor, positive, negative))
    b = a.shape[0]
    own = torch.arange(b, device=a.device)
    a_track, n_track = anchor_track.to(a.device), negative_track.to(a.device)
    same_track = torch.cat([a_track[None, :] == a_track[:, None], n_track[None, :] == a_track[:, None]], dim=1)
    same_track[own, own] = False  # the own positive (or anchor) is the answer, not a left-out candidate
    logits_a = (a @ torch.cat([p, n]).T) / temperature  # anchors against positives, then negatives
    logits_p = (p @ torch.cat([a, n]).T) / temperature  # positives against anchors, then negatives
    loss = 0.5 * (
        F.cross_entropy(logits_a.masked_fill(same_track, float("-inf")), own)
        + F.cross_entropy(logits_p.masked_fill(same_track, float("-inf")), own)
    )
    d_ap, d_an = _paired(a, p, True), _paired(a, n, True)
    with torch.no_grad():
        top1 = logits_a.masked_fill(same_track, float("-inf")).argmax(1) == own
    stats = {
        "loss": float(loss.detach()),
        "triplet_accuracy": float((d_ap < d_an).float().mean()),
        "active_fraction": float(top1.float().mean()),  # here: the share of anchors whose positive ranks first
        "d_ap": float(d_ap.detach().mean()),
        "d_an": float(d_an.detach().mean()),
    }
    return loss, stats


def training_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    settings: TrainSettings,
    anchor_track: torch.Tensor,
    negative_track: torch.Tensor,
    mining: str | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss ``settings.loss`` names, with its settings; ``mining`` overrides ``settings.mining`` (validation
    scores the drawn triplets)."""
    if settings.loss == "ntxent":
        return nt_xent_loss(anchor, positive, negative, anchor_track, negative_track, settings.temperature)
    return triplet_loss(
        anchor, positive, negative, settings.loss, settings.margin, settings.norm_penalty,
        settings.mining if mining is None else mining, anchor_track=anchor_track, negative_track=negative_track,
    )  # fmt: skip


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
