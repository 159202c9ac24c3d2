"""Sparse codes on a fixed dictionary by matching pursuit (the encoder of ITDA-style dictionaries).

Matching pursuit picks, ``L0`` times, the atom most correlated with what is
left of ``x`` and removes its projection. With unit-norm atoms ``D`` (rows),
the correlations can be updated with the Gram matrix ``G = D D^T`` instead of
being recomputed from the residual: ``c <- c - c_j* G[j*]``, one row of ``G``
per step rather than a product with the whole dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SparseCode:
    """``L0`` (atom index, coefficient) pairs per row; an atom may be chosen more than once."""

    indices: torch.Tensor   # (n, L0), long
    coefs: torch.Tensor     # (n, L0)

    def decode(self, atoms: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``sum_t coefs[:, t] * atoms[indices[:, t]]``, (n, d)."""
        return F.embedding_bag(self.indices, atoms, per_sample_weights=self.coefs.to(atoms.dtype), mode="sum")

    def dense(self, n_atoms: int) -> torch.Tensor:
        """The code as a dense (n, n_atoms) matrix, repeated choices summed."""
        out = torch.zeros(self.indices.shape[0], n_atoms, dtype=self.coefs.dtype)
        return out.scatter_add_(1, self.indices, self.coefs)


def unit_atoms(atoms: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm, as matching pursuit expects."""
    return F.normalize(atoms.float(), dim=1)


@torch.no_grad()
def matching_pursuit(x: torch.Tensor, atoms: torch.Tensor, L0: int, gram: torch.Tensor | None = None,  # noqa: N803
                     chunk: int = 4096) -> SparseCode:
    """Encode the rows of ``x`` (n, d) with ``L0`` steps of matching pursuit on unit-norm ``atoms`` (m, d).

    ``gram`` (``atoms @ atoms.T``) can be passed when many batches share one dictionary.
    Rows are processed ``chunk`` at a time, so memory stays at ``chunk x m``.
    """
    if L0 < 1:
        raise ValueError(f"L0 must be at least 1, not {L0}")
    if atoms.ndim != 2 or x.shape[-1] != atoms.shape[1]:
        raise ValueError(f"x (n, {x.shape[-1]}) and atoms (m, d) must share d, got atoms {tuple(atoms.shape)}")
    norms = atoms.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        raise ValueError("atoms must have unit norm: pass unit_atoms(atoms)")
    G = atoms @ atoms.T if gram is None else gram
    indices, coefs = [], []
    for part in x.float().split(chunk):
        c = part @ atoms.T                                   # correlations of the residual with every atom
        rows = torch.arange(len(part))
        idx = torch.empty(len(part), L0, dtype=torch.long)
        val = torch.empty(len(part), L0)
        for step in range(L0):
            best = c.abs().argmax(dim=1)
            value = c[rows, best]
            idx[:, step], val[:, step] = best, value
            c -= value[:, None] * G[best]
        indices.append(idx)
        coefs.append(val)
    return SparseCode(torch.cat(indices), torch.cat(coefs))
