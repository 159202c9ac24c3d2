"""Directions in activation space: difference of means, PCA, and projections per text.

These are the small statistics that probing, steering and ablation papers share. Everything
takes plain ``(n, d)`` tensors (rows are examples), so activations from :func:`actlab.harvest.
per_text`, :func:`actlab.run_with_cache` or a harvest on disk all fit; :func:`pooled` turns a
:class:`~actlab.harvest.TextActivations` into such a tensor. Arithmetic runs in float64 and
results come back in float32 on the CPU. To remove a direction (or a span) inside a forward
pass, use :func:`actlab.hooks.project_out`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .errors import ActlabError
from .harvest import TextActivations

Pool = Literal["last", "mean"]


def _rows(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ActlabError(f"{name} must be a non-empty (n, d) tensor of row vectors, got shape {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64)


def pooled(acts: TextActivations, site: str, pool: Pool = "last") -> torch.Tensor:
    """One row per text at ``site``: its last token, or the mean over its kept tokens."""
    if site not in acts.last:
        raise ActlabError(f"site {site!r} was not captured; captured: {sorted(acts.last)}")
    if pool == "last":
        return acts.last[site].float()
    if pool == "mean":
        return torch.stack([t.float().mean(0) for t in acts.tokens[site]])
    raise ActlabError(f"pool must be 'last' or 'mean', got {pool!r}")


@dataclass(frozen=True)
class Direction:
    """The difference of two class means, ``mean(positive) - mean(negative)``.

    ``vector`` keeps its length (the distance between the means, the unit a steering scale is
    often given in); ``unit`` is the same direction with length 1. ``midpoint`` is halfway
    between the means, the natural threshold of the one-dimensional classifier it defines.
    """

    vector: torch.Tensor
    positive_mean: torch.Tensor
    negative_mean: torch.Tensor

    @property
    def unit(self) -> torch.Tensor:
        norm = self.vector.norm()
        if norm == 0:
            raise ActlabError("the two class means are equal: the direction is undefined")
        return self.vector / norm

    @property
    def midpoint(self) -> torch.Tensor:
        return (self.positive_mean + self.negative_mean) / 2

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance of each row from the midpoint along ``unit`` (positive: the positive side)."""
        return project(x, self.unit, origin=self.midpoint)


def diff_of_means(positive: torch.Tensor, negative: torch.Tensor) -> Direction:
    """The difference-of-means direction between two sets of row vectors of the same width."""
    p, n = _rows(positive, "positive"), _rows(negative, "negative")
    if p.shape[1] != n.shape[1]:
        raise ActlabError(f"positive rows have width {p.shape[1]}, negative rows {n.shape[1]}")
    mp, mn = p.mean(0), n.mean(0)
    return Direction((mp - mn).float(), mp.float(), mn.float())


def project(x: torch.Tensor, direction: torch.Tensor, origin: torch.Tensor | None = None) -> torch.Tensor:
    """The coordinate of each row of ``x`` along ``direction`` (made unit length), measured from ``origin``."""
    rows = _rows(x, "x")
    d = torch.as_tensor(direction).detach().to("cpu", torch.float64).flatten()
    if d.shape[0] != rows.shape[1]:
        raise ActlabError(f"direction has width {d.shape[0]}, rows have width {rows.shape[1]}")
    if d.norm() == 0:
        raise ActlabError("cannot project on a zero direction")
    if origin is not None:
        rows = rows - torch.as_tensor(origin).detach().to("cpu", torch.float64)
    return (rows @ (d / d.norm())).float()


@dataclass(frozen=True)
class PCA:
    """Principal components of a set of row vectors, fitted by :func:`fit_pca`.

    ``components`` are orthonormal rows, ordered by ``explained_variance`` (largest first); the
    sign of each is fixed so its largest-magnitude entry is positive, so a refit on the same data
    gives the same axes.
    """

    mean: torch.Tensor                 # (d,)
    components: torch.Tensor           # (k, d)
    explained_variance: torch.Tensor   # (k,), unbiased (divides by n - 1)
    total_variance: float              # sum over all d dimensions, for the ratios

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        return self.explained_variance / self.total_variance

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates of each row in the component basis, ``(n, k)``."""
        rows = _rows(x, "x")
        return ((rows - self.mean.double()) @ self.components.double().T).float()

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """Rows back in the original space from component coordinates ``(n, k)``."""
        return (torch.as_tensor(z).double() @ self.components.double() + self.mean.double()).float()


def fit_pca(x: torch.Tensor, n_components: int | None = None) -> PCA:
    """Fit PCA to the rows of ``x`` (centred on their mean), keeping ``n_components`` (default: all)."""
    rows = _rows(x, "x")
    n, d = rows.shape
    if n < 2:
        raise ActlabError("PCA needs at least two rows")
    k = min(n, d) if n_components is None else n_components
    if not 1 <= k <= min(n, d):
        raise ActlabError(f"n_components must be between 1 and min(n, d) = {min(n, d)}, got {k}")
    mean = rows.mean(0)
    centred = rows - mean
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    vt = vt[:k]
    signs = torch.sign(vt.gather(1, vt.abs().argmax(1, keepdim=True))).squeeze(1)
    vt = vt * torch.where(signs == 0, 1.0, signs)[:, None]
    variance = s[:k] ** 2 / (n - 1)
    total = float((centred ** 2).sum() / (n - 1))
    return PCA(mean.float(), vt.float(), variance.float(), total)
