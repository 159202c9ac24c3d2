"""Sparse autoencoders (TopK and ReLU-L1), a fast CPU trainer, and a cache of trained SAEs.

An SAE maps an activation ``x`` (``d_in``) to latents ``z`` (``d_sae``) and back:

    pre   = (x - b_dec) @ W_enc + b_enc
    z     = TopK(ReLU(pre), k)            # "topk": keep the k largest
    z     = ReLU(pre)                     # "relu": sparsity from an L1 penalty
    x_hat = z @ W_dec + b_dec

Decoder rows are kept at unit norm. The TopK decoder is a sparse gather
(``embedding_bag``), so a step costs two dense ``(B, d) x (d, n)`` products
instead of four. Saved SAEs use the layout SAELens reads: ``cfg.json`` and
``sae_weights.safetensors`` with ``W_enc (d_in, d_sae)``, ``b_enc``,
``W_dec (d_sae, d_in)`` and ``b_dec``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from ._progress import tqdm

from .errors import ActlabError
from .models import LanguageModel, cache_dir


@dataclass(frozen=True)
class SAEConfig:
    """Architecture and training recipe; every field enters the cache key."""

    d_in: int
    d_sae: int
    kind: Literal["topk", "relu"] = "topk"
    k: int = 32
    l1_coefficient: float = 5.0
    lr: float = 4e-4
    batch_size: int = 1024
    epochs: float = 1.0
    seed: int = 0
    #: weight of the auxiliary loss that revives dead TopK latents (Gao et al. 2024), 0 to disable
    auxk_coefficient: float = 1 / 32
    auxk_k: int = 256
    #: a latent that has not fired for this many tokens counts as dead
    dead_after_tokens: int = 100_000
    lr_warmup_steps: int = 50


class SparseAutoencoder(nn.Module):
    """A TopK or ReLU SAE with unit-norm decoder rows."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Encoder starts as the decoder's transpose, the usual initialisation.
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK codes as (values, indices), each ``(..., k)``; values are >= 0."""
        values, indices = self.pre_activations(x).topk(self.cfg.k, dim=-1, sorted=False)
        return F.relu(values), indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent codes ``z``, ``(..., d_sae)``."""
        if self.cfg.kind == "relu":
            return F.relu(self.pre_activations(x))
        values, indices = self.encode_sparse(x)
        return torch.zeros(*x.shape[:-1], self.cfg.d_sae, dtype=x.dtype).scatter_(-1, indices, values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        flat_shape = values.shape[:-1]
        out = F.embedding_bag(indices.reshape(-1, indices.shape[-1]), self.W_dec,
                              per_sample_weights=values.reshape(-1, values.shape[-1]), mode="sum")
        return out.view(*flat_shape, self.cfg.d_in) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x_hat``."""
        if self.cfg.kind == "relu":
            return self.decode(self.encode(x))
        return self.decode_sparse(*self.encode_sparse(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    # --- SAELens-compatible files ---------------------------------------------------------

    def save(self, directory: str | Path, extra_cfg: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = {
            "architecture": "topk" if self.cfg.kind == "topk" else "standard",
            "d_in": self.cfg.d_in, "d_sae": self.cfg.d_sae, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none",
            **({"k": self.cfg.k} if self.cfg.kind == "topk" else {}),
            "actlab": asdict(self.cfg), **(extra_cfg or {}),
        }
        (directory / "cfg.json").write_text(json.dumps(cfg, indent=1))
        tensors = {"W_enc": self.W_enc.detach().contiguous(), "b_enc": self.b_enc.detach(),
                   "W_dec": self.W_dec.detach().contiguous(), "b_dec": self.b_dec.detach()}
        save_file(tensors, str(directory / "sae_weights.safetensors"))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "SparseAutoencoder":
        directory = Path(directory)
        cfg = json.loads((directory / "cfg.json").read_text())
        sae = cls(SAEConfig(**cfg["actlab"]))
        sae.load_state_dict(load_file(str(directory / "sae_weights.safetensors")))
        return sae


@dataclass
class TrainLog:
    """What happened during training, for plots and the run record."""

    steps: list[int] = field(default_factory=list)
    fvu: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def train_sae(
    activations: torch.Tensor,
    cfg: SAEConfig,
    progress: bool = True,
    log_every: int = 10,
) -> tuple[SparseAutoencoder, TrainLog]:
    """Train an SAE on ``activations`` (``(n_tokens, d_in)``, float32) with Adam.

    The decoder bias starts at the data's mean, the decoder rows stay at unit
    norm (the gradient component along each row is removed before the step),
    and the learning rate warms up linearly. Batches are a seeded shuffle, so
    the same inputs and config give the same SAE on the same machine.
    """
    if activations.ndim != 2 or activations.shape[1] != cfg.d_in:
        raise ActlabError(f"activations must be (n_tokens, {cfg.d_in}), got {tuple(activations.shape)}")
    x_all = activations.float()
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        sae.b_dec.copy_(x_all.mean(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, fused=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    n = x_all.shape[0]
    total_steps = max(1, int(cfg.epochs * n) // cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, cfg.lr_warmup_steps)))
    # Variance of the data about its mean: the denominator of the fraction of variance unexplained.
    total_variance = (x_all - x_all.mean(0)).pow(2).sum(-1).mean().item()
    tokens_since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    log = TrainLog()
    order = torch.randperm(n, generator=generator)
    cursor = 0
    started = time.perf_counter()
    bar = tqdm(range(total_steps), desc=f"train {cfg.kind} SAE", unit="step", disable=not progress)
    for step in bar:
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        x = x_all[order[cursor:cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        optimizer.zero_grad(set_to_none=True)
        if cfg.kind == "topk":
            error, values, indices = topk_step_gradients(sae, x, dead_mask(tokens_since_fired, cfg), cfg)
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
            fired[indices[values > 0]] = True
            l0 = float((values > 0).sum(-1).float().mean())
        else:
            z = F.relu(sae.pre_activations(x))
            error = x - sae.decode(z)
            mse = error.pow(2).sum(-1).mean()
            # Penalise z_i * ||W_dec_i|| so the penalty cannot be dodged by scaling the decoder.
            loss = mse + cfg.l1_coefficient * (z * sae.W_dec.norm(dim=1)).sum(-1).mean()
            loss.backward()
            fired = (z > 0).any(0)
            l0 = float((z > 0).sum(-1).float().mean())
        tokens_since_fired = torch.where(fired, 0, tokens_since_fired + x.shape[0])
        dead = dead_mask(tokens_since_fired, cfg)
        _remove_parallel_grad(sae)
        optimizer.step()
        scheduler.step()
        sae.normalize_decoder()
        if step % log_every == 0 or step == total_steps - 1:
            fvu = error.pow(2).sum(-1).mean().item() / total_variance
            log.steps.append(step)
            log.fvu.append(fvu)
            log.l0.append(l0)
            log.dead_fraction.append(float(dead.float().mean()))
            bar.set_postfix(fvu=f"{fvu:.3f}", l0=f"{l0:.1f}")
    log.tokens = total_steps * cfg.batch_size
    log.seconds = time.perf_counter() - started
    sae.eval()
    sae.requires_grad_(False)
    return sae, log


def dead_mask(tokens_since_fired: torch.Tensor, cfg: SAEConfig) -> torch.Tensor:
    return tokens_since_fired > cfg.dead_after_tokens


def _sparse_rows_matmul(indices: torch.Tensor, weights: torch.Tensor, rhs: torch.Tensor, d_sae: int) -> torch.Tensor:
    """``S^T @ rhs`` for the sparse ``(batch, d_sae)`` matrix S holding ``weights`` at ``indices``.

    This is the weight gradient of a TopK layer: only batch x k rows are touched,
    so it costs batch x k x d instead of a dense batch x d_sae x d product.
    """
    batch, k = indices.shape
    rows = torch.arange(batch).repeat_interleave(k)
    s_t = torch.sparse_coo_tensor(torch.stack([indices.reshape(-1), rows]), weights.reshape(-1), (d_sae, batch),
                                  check_invariants=False)
    return torch.sparse.mm(s_t, rhs)


@torch.no_grad()
def topk_step_gradients(
    sae: SparseAutoencoder, x: torch.Tensor, dead: torch.Tensor, cfg: SAEConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss gradients of one TopK step, written out by hand and stored in ``.grad``.

    Autograd would scatter the TopK gradient into a dense ``(batch, d_sae)``
    matrix and multiply it out; here both weight gradients use the k non-zeros
    per row only, which makes a step about three dense products cheaper.

    Loss: ``mean_b ||x_hat - x||^2`` plus, when latents are dead, the AuxK term
    ``coef * mean_b ||e_hat - e||^2 / mean_b ||e||^2`` with ``e = x - x_hat``
    reconstructed from the top ``auxk_k`` dead latents. Returns the error
    ``x - x_hat`` and the TopK (values, indices).
    """
    batch = x.shape[0]
    centred = x - sae.b_dec
    pre = centred @ sae.W_enc + sae.b_enc
    values, indices = pre.topk(cfg.k, dim=-1, sorted=False)
    acts = F.relu(values)
    x_hat = F.embedding_bag(indices, sae.W_dec, per_sample_weights=acts, mode="sum") + sae.b_dec
    error = x - x_hat
    grad_x_hat = -2.0 * error / batch  # d loss / d x_hat
    grad_w_dec = _sparse_rows_matmul(indices, acts, grad_x_hat, cfg.d_sae)
    # Gradient flowing into the kept pre-activations (zero where ReLU cut them).
    grad_values = (grad_x_hat @ sae.W_dec.T).gather(1, indices) * (values > 0)
    grad_b_dec = grad_x_hat.sum(0)
    aux_indices, grad_aux = None, None
    n_dead = int(dead.sum())
    if cfg.auxk_coefficient > 0 and n_dead > 0:
        k_aux = min(cfg.auxk_k, n_dead)
        aux_values, aux_indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
        aux_acts = F.relu(aux_values)
        error_hat = F.embedding_bag(aux_indices, sae.W_dec, per_sample_weights=aux_acts, mode="sum")
        scale = cfg.auxk_coefficient / error.pow(2).sum(-1).mean().clamp_min(1e-8)
        grad_error_hat = 2.0 * scale * (error_hat - error) / batch
        grad_w_dec += _sparse_rows_matmul(aux_indices, aux_acts, grad_error_hat, cfg.d_sae)
        grad_aux = (grad_error_hat @ sae.W_dec.T).gather(1, aux_indices) * (aux_values > 0)
    grad_w_enc_t = _sparse_rows_matmul(indices, grad_values, centred, cfg.d_sae)
    grad_b_enc = torch.zeros(cfg.d_sae).index_add_(0, indices.reshape(-1), grad_values.reshape(-1))
    if aux_indices is not None:
        grad_w_enc_t += _sparse_rows_matmul(aux_indices, grad_aux, centred, cfg.d_sae)
        grad_b_enc.index_add_(0, aux_indices.reshape(-1), grad_aux.reshape(-1))
    # b_dec is subtracted before the encoder: its gradient there is -(sum_b dL/dpre_b) @ W_enc^T.
    grad_b_dec -= grad_b_enc @ sae.W_enc.T
    sae.W_enc.grad = grad_w_enc_t.T.contiguous()
    sae.b_enc.grad = grad_b_enc
    sae.W_dec.grad = grad_w_dec
    sae.b_dec.grad = grad_b_dec
    return error, values, indices


@torch.no_grad()
def _remove_parallel_grad(sae: SparseAutoencoder) -> None:
    if sae.W_dec.grad is None:
        return
    parallel = (sae.W_dec.grad * sae.W_dec).sum(dim=1, keepdim=True)
    sae.W_dec.grad -= parallel * sae.W_dec


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, activations: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Fraction of variance unexplained, mean L0 and dead-latent fraction on held-out activations."""
    errors, l0s, fired = 0.0, 0.0, torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for start in range(0, activations.shape[0], batch_size):
        x = activations[start:start + batch_size].float()
        z = sae.encode(x)
        errors += (x - sae.decode(z)).pow(2).sum().item()
        l0s += (z > 0).sum().item()
        fired |= (z > 0).any(0)
    n = activations.shape[0]
    variance = (activations.float() - activations.float().mean(0)).pow(2).sum().item()
    return {"fvu": errors / variance, "l0": l0s / n, "dead_fraction": 1 - fired.float().mean().item()}


# --- the shared cache --------------------------------------------------------------------------


def tensor_fingerprint(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's bytes and shape: the data hash of a cached SAE."""
    digest = hashlib.sha256(str(tuple(tensor.shape)).encode())
    digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: str, site: str, cfg: SAEConfig, data_hash: str) -> str:
    # Numbers are keyed by value, so epochs=2 and epochs=2.0 name the same recipe.
    recipe_cfg = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                  for k, v in asdict(cfg).items()}
    recipe = json.dumps({"model": model, "site": site, "cfg": recipe_cfg, "data": data_hash}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:20]


def cached_sae(
    activations: torch.Tensor,
    cfg: SAEConfig,
    model: str,
    site: str,
    data_hash: str | None = None,
    progress: bool = True,
) -> tuple[SparseAutoencoder, dict]:
    """Train an SAE once per (model, site, recipe, data) and reuse it from the cache afterwards.

    Returns the SAE and its record (recipe, data hash, training figures, and
    ``cache_hit``). A different model, site, config field or data hash is a
    different key, so the cache never returns an SAE trained another way.
    """
    data_hash = data_hash or tensor_fingerprint(activations)
    key = cache_key(model, site, cfg, data_hash)
    directory = cache_dir() / "saes" / f"{model.replace('/', '--')}--{site}--{key}"
    record_path = directory / "actlab.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        return SparseAutoencoder.load(directory), {**record, "cache_hit": True}
    sae, log = train_sae(activations, cfg, progress=progress)
    record = {"model": model, "site": site, "cfg": asdict(cfg), "data_hash": data_hash, "key": key,
              "train_tokens": log.tokens, "train_seconds": log.seconds, "final_fvu": log.fvu[-1]}
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".tmp-"))
    try:
        sae.save(tmp, {"model_name": model, "hook_name": site})
        (tmp / "actlab.json").write_text(json.dumps(record, indent=1))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return sae, {**record, "cache_hit": False}


def standard_sae(
    lm: LanguageModel,
    site: str | None = None,
    n_tokens: int = 100_000,
    expansion: int = 8,
    k: int = 32,
    epochs: float = 2.0,
    seq_len: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> tuple[SparseAutoencoder, dict]:
    """The collection's shared TopK SAE for a model and site, trained once and then read from the cache.

    Recipe: residual activations over WikiText-2 (test split, articles joined,
    windows of ``seq_len`` tokens starting with BOS, position 0 dropped),
    ``expansion x d_model`` latents, TopK with ``k``, Adam at 4e-4, batch 1,024.
    Notebooks that ask for the same model, site and arguments share one SAE; any
    other argument is another cache entry. ``site`` defaults to the middle layer's
    ``resid_post``. The record says whether it was a cache hit.
    """
    from . import data
    from .harvest import harvest, token_windows

    site = site or f"resid_post.{lm.n_layers // 2}"
    n_windows = -(-n_tokens // (seq_len - 1))
    windows = token_windows(lm, data.wikitext_documents("test"), seq_len, n_windows)
    stored = harvest(lm, windows, site, progress=progress)
    cfg = SAEConfig(d_in=lm.d_model, d_sae=expansion * lm.d_model, kind="topk", k=k, epochs=epochs, seed=seed)
    return cached_sae(stored.load(), cfg, model=lm.name, site=site, data_hash=stored.meta["fingerprint"],
                      progress=progress)
