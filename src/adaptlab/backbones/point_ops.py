"""Neighbourhood operations on point clouds ([B, N, 3] tensors), written in plain torch.

The CUDA kernels point-cloud libraries ship (pointnet2_ops, torch-cluster) need a compiler
and a GPU at install time; these few gathers and distance matrices run on any device and are
fast enough for the clouds of a few thousand points adaptlab's backbones read.
"""

from __future__ import annotations

import torch


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values`` [B, N, C] at ``index`` [B, ...] -> [B, ..., C]."""
    batch = values.shape[0]
    flat = index.reshape(batch, -1)
    picked = torch.gather(values, 1, flat.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return picked.reshape(*index.shape, values.shape[-1])


def knn(queries: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, M, k] of the ``k`` nearest ``points`` [B, N, C] to each query [B, M, C]."""
    distances = torch.cdist(queries, points)
    return distances.topk(k, dim=-1, largest=False).indices


@torch.no_grad()
def farthest_point_sample(points: torch.Tensor, count: int) -> torch.Tensor:
    """Indices [B, count] spread over each cloud: every pick is the point farthest from
    those already picked, starting at the point farthest from the centroid (not at index
    0, so the picks do not depend on the order the points come in)."""
    batch, n, _ = points.shape
    chosen = torch.zeros(batch, count, dtype=torch.long, device=points.device)
    nearest = torch.full((batch, n), float("inf"), device=points.device)
    current = (points - points.mean(dim=1, keepdim=True)).norm(dim=-1).argmax(dim=-1)
    rows = torch.arange(batch, device=points.device)
    for i in range(count):
        chosen[:, i] = current
        distance = ((points - points[rows, current].unsqueeze(1)) ** 2).sum(-1)
        nearest = torch.minimum(nearest, distance)
        current = nearest.argmax(dim=-1)
    return chosen


def interpolate(features: torch.Tensor, centres: torch.Tensor, points: torch.Tensor,
                k: int = 3) -> torch.Tensor:
    """Features [B, M, C] at ``centres`` [B, M, 3] spread to ``points`` [B, N, 3] by
    inverse-distance weighting of the ``k`` nearest centres (PointNet++'s propagation)."""
    distances = torch.cdist(points, centres)
    near, index = distances.topk(k, dim=-1, largest=False)
    weights = 1.0 / (near + 1e-8)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return (gather(features, index) * weights.unsqueeze(-1)).sum(dim=2)
