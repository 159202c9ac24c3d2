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
from dataclasses import asdict, dataclass, field, replace
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
    #: the last fraction of the steps over which the learning rate falls linearly to 0
    lr_decay_fraction: float = 0.0
    #: precision of the TopK trainer's two dense products (encoder, and the error sent back to the
    #: kept latents): "bfloat16", "float32", or "auto" (bf16 where the CPU multiplies bf16 natively,
    #: i.e. has AMX; fp32 elsewhere). Weights, optimiser state and everything else stay fp32.
    matmul_dtype: str = "auto"

    def resolved(self) -> "SAEConfig":
        """This config with ``matmul_dtype`` fixed for this machine (what the cache key and records hold)."""
        return replace(self, matmul_dtype=resolve_matmul_dtype(self.matmul_dtype))


def fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX), so that bf16 is faster than fp32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def resolve_matmul_dtype(name: str) -> str:
    if name == "auto":
        return "bfloat16" if fast_bf16() else "float32"
    if name not in ("bfloat16", "float32"):
        raise ActlabError(f"matmul_dtype must be 'auto', 'bfloat16' or 'float32', not {name!r}")
    return name


class SparseAutoencoder(nn.Module):
    """A TopK or ReLU SAE with unit-norm decoder rows."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Encoder starts as the decoder's transpose, the usual initialisation. It is stored as
        # W_enc^T, (d_sae, d_in), because the trainer computes its gradient in that layout (a
        # transpose of 2.4M floats per step is otherwise 10 % of a step); ``W_enc``, state dicts and
        # saved files show the usual (d_in, d_sae) matrix.
        self.W_enc_t = nn.Parameter(w_dec.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self._register_state_dict_hook(_state_dict_with_w_enc)
        self._register_load_state_dict_pre_hook(_load_w_enc)

    @property
    def W_enc(self) -> torch.Tensor:  # noqa: N802 - SAELens's name
        """Encoder weights, ``(d_in, d_sae)`` (a view of the stored transpose)."""
        return self.W_enc_t.T

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


def _state_dict_with_w_enc(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> dict:
    state[prefix + "W_enc"] = state.pop(prefix + "W_enc_t").T.contiguous()
    return state


def _load_w_enc(state: dict, prefix: str, *args: object) -> None:
    if prefix + "W_enc" in state:
        state[prefix + "W_enc_t"] = state.pop(prefix + "W_enc").T.contiguous()


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
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 200,
) -> tuple[SparseAutoencoder, TrainLog]:
    """Train an SAE on ``activations`` (``(n_tokens, d_in)``, float32) with Adam.

    The decoder bias starts at the data's mean, the decoder rows stay at unit
    norm (the gradient component along each row is removed before the step),
    and the learning rate warms up linearly. Batches are a seeded shuffle, so
    the same inputs and config give the same SAE on the same machine.

    With ``checkpoint`` (a file path), the whole training state is saved there every
    ``checkpoint_every`` steps and training resumes from it when it exists: an
    interrupted build continues where it stopped and ends with the SAE an
    uninterrupted one would give.
    """
    if activations.ndim != 2 or activations.shape[1] != cfg.d_in:
        raise ActlabError(f"activations must be (n_tokens, {cfg.d_in}), got {tuple(activations.shape)}")
    x_all = activations.float()
    cfg = cfg.resolved()
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        sae.b_dec.copy_(x_all.mean(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, fused=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    n = x_all.shape[0]
    total_steps = max(1, int(cfg.epochs * n) // cfg.batch_size)
    decay_start = total_steps * (1 - cfg.lr_decay_fraction)

    def lr_factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / max(1, cfg.lr_warmup_steps))
        if step < decay_start:
            return warmup
        return warmup * max(0.0, (total_steps - step) / max(1.0, total_steps - decay_start))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    # Variance of the data about its mean: the denominator of the fraction of variance unexplained.
    total_variance = (x_all - x_all.mean(0)).pow(2).sum(-1).mean().item()
    tokens_since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    log = TrainLog()
    order = torch.randperm(n, generator=generator)
    cursor, first_step = 0, 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, weights_only=False)
        sae.load_state_dict(state["sae"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        order, cursor, first_step = state["order"], state["cursor"], state["step"]
        tokens_since_fired, log = state["tokens_since_fired"], state["log"]
    started = time.perf_counter() - log.seconds
    bar = tqdm(range(first_step, total_steps), desc=f"train {cfg.kind} SAE", unit="step", disable=not progress,
               initial=first_step, total=total_steps)
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
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < total_steps:
            log.seconds = time.perf_counter() - started
            _atomic_torch_save({"sae": sae.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                                "order": order, "cursor": cursor, "step": step + 1,
                                "tokens_since_fired": tokens_since_fired, "log": log}, Path(checkpoint))
    log.tokens = total_steps * cfg.batch_size
    log.seconds = time.perf_counter() - started
    sae.eval()
    sae.requires_grad_(False)
    return sae, log


def _atomic_torch_save(state: dict, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".pt")
    os.close(handle)
    try:
        torch.save(state, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    low = getattr(torch, resolve_matmul_dtype(cfg.matmul_dtype))
    pre = torch.addmm(sae.b_enc.to(low), centred.to(low), sae.W_enc.to(low))
    values, indices = pre.topk(cfg.k, dim=-1, sorted=False)
    values = values.float()
    acts = F.relu(values)
    x_hat = F.embedding_bag(indices, sae.W_dec, per_sample_weights=acts, mode="sum") + sae.b_dec
    error = x - x_hat
    grad_x_hat = -2.0 * error / batch  # d loss / d x_hat
    grad_w_dec = _sparse_rows_matmul(indices, acts, grad_x_hat, cfg.d_sae)
    # Gradient flowing into the kept pre-activations (zero where ReLU cut them).
    w_dec_t = sae.W_dec.T.to(low)
    grad_values = (grad_x_hat.to(low) @ w_dec_t).gather(1, indices).float() * (values > 0)
    grad_b_dec = grad_x_hat.sum(0)
    aux_indices, grad_aux = None, None
    n_dead = int(dead.sum())
    if cfg.auxk_coefficient > 0 and n_dead > 0:
        k_aux = min(cfg.auxk_k, n_dead)
        if n_dead * 4 <= cfg.d_sae:  # few dead latents: rank only their columns
            dead_ids = dead.nonzero().squeeze(1)
            aux_values, columns = pre.index_select(1, dead_ids).topk(k_aux, dim=-1, sorted=False)
            aux_indices = dead_ids[columns]
        else:
            aux_values, aux_indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
        aux_values = aux_values.float()
        aux_acts = F.relu(aux_values)
        error_hat = F.embedding_bag(aux_indices, sae.W_dec, per_sample_weights=aux_acts, mode="sum")
        scale = cfg.auxk_coefficient / error.pow(2).sum(-1).mean().clamp_min(1e-8)
        grad_error_hat = 2.0 * scale * (error_hat - error) / batch
        grad_w_dec += _sparse_rows_matmul(aux_indices, aux_acts, grad_error_hat, cfg.d_sae)
        grad_aux = (grad_error_hat.to(low) @ w_dec_t).gather(1, aux_indices).float() * (aux_values > 0)
    grad_w_enc_t = _sparse_rows_matmul(indices, grad_values, centred, cfg.d_sae)
    grad_b_enc = torch.zeros(cfg.d_sae).index_add_(0, indices.reshape(-1), grad_values.reshape(-1))
    if aux_indices is not None:
        grad_w_enc_t += _sparse_rows_matmul(aux_indices, grad_aux, centred, cfg.d_sae)
        grad_b_enc.index_add_(0, aux_indices.reshape(-1), grad_aux.reshape(-1))
    # b_dec is subtracted before the encoder: its gradient there is -(sum_b dL/dpre_b) @ W_enc^T.
    grad_b_dec -= grad_b_enc @ sae.W_enc.T
    sae.W_enc_t.grad = grad_w_enc_t
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
    cfg = cfg.resolved()
    key = cache_key(model, site, cfg, data_hash)
    directory = sae_directory(model, site, key)
    record_path = directory / "actlab.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        return SparseAutoencoder.load(directory), {**record, "cache_hit": True}
    checkpoint = directory.parent / f".{directory.name}.checkpoint.pt"
    sae, log = train_sae(activations, cfg, progress=progress, checkpoint=checkpoint)
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
    checkpoint.unlink(missing_ok=True)
    return sae, {**record, "cache_hit": False}


def sae_directory(model: str, site: str, key: str) -> Path:
    """Where the cache keeps the SAE of a model, site and recipe key."""
    return cache_dir() / "saes" / f"{model.replace('/', '--')}--{site}--{key}"


#: Training tokens of a full standard SAE (2^20), and the held-out windows its core metrics read.
STANDARD_TOKENS = 1_048_576
STANDARD_EVAL_WINDOWS = 64
CORE_METRICS_FILE = "core_metrics.json"


def standard_sae(
    lm: LanguageModel,
    site: str | None = None,
    n_tokens: int = STANDARD_TOKENS,
    expansion: int = 8,
    k: int = 32,
    epochs: float = 2.0,
    seq_len: int = 128,
    seed: int = 0,
    progress: bool = True,
    compute_dtype: torch.dtype | str | None = "auto",
    eval_windows: int | None = None,
) -> tuple[SparseAutoencoder, dict]:
    """The collection's shared TopK SAE for a model and site, trained once and then read from the cache.

    Data: ``data.english_prose("train")`` (WikiText-2 valid, movie reviews, State of the
    Union addresses) cut into windows of ``seq_len`` tokens starting with BOS, position 0
    dropped. The harvest runs in bf16 where the CPU has AMX (``compute_dtype="auto"``, see
    :func:`actlab.harvest.harvest`; ``compute_dtype=None`` keeps the model's fp32), and so do the
    trainer's dense products (``SAEConfig.matmul_dtype``). Never WikiText-2 test, which is held out: the SAE's core metrics
    (:func:`core_metrics`, SAEBench's names) are measured there on ``eval_windows``
    windows and stored beside the weights as ``core_metrics.json``. Recipe:
    ``expansion x d_model`` latents, TopK with ``k``, AuxK, Adam at 8e-4 with warm-up and a linear decay over the last 20 % of steps,
    batch 1,024, decoder bias started at the data mean. Notebooks asking for the same
    model, site and arguments share one SAE; any other argument is another cache entry.
    ``site`` defaults to the middle layer's ``resid_post``. The record says whether it was
    a cache hit and carries the core metrics.
    """
    from . import data
    from .harvest import harvest, resolve_compute_dtype, token_windows

    site = site or f"resid_post.{lm.n_layers // 2}"
    n_windows = -(-n_tokens // (seq_len - 1))
    if progress:
        print(f"standard SAE for {lm.name} {site}: {n_tokens:,} training tokens "
              "(built once, then read from the cache)")
    windows = token_windows(lm, data.english_prose("train"), seq_len, n_windows)
    compute_dtype = resolve_compute_dtype(compute_dtype, lm)
    stored = harvest(lm, windows, site, progress=progress, compute_dtype=compute_dtype)
    # Recipe chosen by measurement on SmolLM2 resid_post.15 (1M tokens, 2 epochs, held-out EV on
    # WikiText-2 test): lr 4e-4 0.788; with the last 20 % decayed 0.786; lr 8e-4 decayed 0.805;
    # lr 1.2e-3 with 30 % decayed 0.807 but latents start to die (0.4 %).
    cfg = SAEConfig(d_in=lm.d_model, d_sae=expansion * lm.d_model, kind="topk", k=k, epochs=epochs, seed=seed,
                    lr=8e-4, lr_decay_fraction=0.2)
    sae, record = cached_sae(stored.load(), cfg, model=lm.name, site=site, data_hash=stored.meta["fingerprint"],
                             progress=progress)
    core_path = sae_directory(lm.name, site, record["key"]) / CORE_METRICS_FILE
    if core_path.exists():
        core = json.loads(core_path.read_text())
    else:
        n_eval = eval_windows or min(STANDARD_EVAL_WINDOWS, max(4, n_tokens // 16_384))
        heldout = token_windows(lm, data.english_prose("heldout"), seq_len, n_eval)
        core = {"eval_config": {"dataset": "wikitext-2 test", "n_windows": n_eval, "context_size": seq_len,
                                "drop_first": True},
                "eval_result_metrics": core_metrics(lm, sae, site, heldout)}
        tmp = core_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(core, indent=1))
        os.replace(tmp, core_path)
    return sae, {**record, "core_metrics": core["eval_result_metrics"], "training_data": "english_prose train",
                 "harvest_compute_dtype": str(compute_dtype or lm.dtype)}


# --- quality on held-out text, in SAEBench's "core" terms ----------------------------------------


@torch.no_grad()
def core_metrics(lm: LanguageModel, sae: SparseAutoencoder, site: str, windows: torch.Tensor,
                 batch_size: int = 8, drop_first: bool = True) -> dict[str, dict[str, float]]:
    """Evaluate ``sae`` at ``site`` on token ``windows`` (held-out text), with SAEBench core's field names.

    Reconstruction and sparsity are measured on the site's activations; the CE loss and
    KL scores splice the reconstruction into the forward pass. With ``drop_first``
    (the harvester's default, how the standard SAEs are trained) position 0 is neither
    measured nor patched. Scores: ``ce_loss_score = (CE_ablation - CE_sae) / (CE_ablation -
    CE_clean)`` with zero ablation, ``kl_div_score = 1 - KL_sae / KL_ablation``.
    """
    from .hooks import patch, run_with_cache, zero_ablate
    from .metrics import keep_first_position, token_losses

    first = 1 if drop_first else 0
    wrap = keep_first_position if drop_first else (lambda edit: edit)
    sums = {"sq_err": 0.0, "sq_dev": 0.0, "cos": 0.0, "l0": 0.0, "l1": 0.0, "norm_in": 0.0, "norm_out": 0.0,
            "dot": 0.0, "sq_out": 0.0, "ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0, "kl_sae": 0.0,
            "kl_zero": 0.0}
    n_tokens, n_loss = 0, 0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    # Pass 1: the mean activation, for explained variance about the mean.
    total, count = torch.zeros(sae.cfg.d_in, dtype=torch.float64), 0
    for start in range(0, len(windows), batch_size):
        acts = run_with_cache(lm, site, input_ids=windows[start:start + batch_size])[site][:, first:]
        total += acts.reshape(-1, acts.shape[-1]).double().sum(0)
        count += acts.shape[0] * acts.shape[1]
    mean = (total / count).float()
    reconstruct = wrap(lambda value: sae(value.float()).to(value.dtype))
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size]
        clean_logits = lm.model(input_ids=ids, use_cache=False).logits
        x = run_with_cache(lm, site, input_ids=ids)[site][:, first:].reshape(-1, sae.cfg.d_in).float()
        z = sae.encode(x)
        x_hat = sae.decode(z)
        sums["sq_err"] += (x - x_hat).pow(2).sum().item()
        sums["sq_dev"] += (x - mean).pow(2).sum().item()
        sums["cos"] += F.cosine_similarity(x, x_hat, dim=-1).sum().item()
        sums["l0"] += (z > 0).sum().item()
        sums["l1"] += z.abs().sum().item()
        sums["norm_in"] += x.norm(dim=-1).sum().item()
        sums["norm_out"] += x_hat.norm(dim=-1).sum().item()
        sums["dot"] += (x * x_hat).sum().item()
        sums["sq_out"] += x_hat.pow(2).sum().item()
        fired |= (z > 0).any(0)
        n_tokens += x.shape[0]
        with patch(lm, {site: reconstruct}):
            sae_logits = lm.model(input_ids=ids, use_cache=False).logits
        with patch(lm, {site: wrap(zero_ablate())}):
            zero_logits = lm.model(input_ids=ids, use_cache=False).logits
        clean_logp = F.log_softmax(clean_logits[:, first:-1].float(), -1)
        for name, logits in (("ce_clean", clean_logits), ("ce_sae", sae_logits), ("ce_zero", zero_logits)):
            losses, _ = token_losses(logits, ids)
            sums[name] += losses[:, first:].sum().item()
        for name, logits in (("kl_sae", sae_logits), ("kl_zero", zero_logits)):
            logq = F.log_softmax(logits[:, first:-1].float(), -1)
            sums[name] += (clean_logp.exp() * (clean_logp - logq)).sum().item()
        n_loss += ids.shape[0] * (ids.shape[1] - 1 - first)
    ce = {k: sums[k] / n_loss for k in ("ce_clean", "ce_sae", "ce_zero")}
    kl = {k: sums[k] / n_loss for k in ("kl_sae", "kl_zero")}
    return {
        "model_behavior_preservation": {
            "kl_div_score": 1 - kl["kl_sae"] / kl["kl_zero"], "kl_div_with_ablation": kl["kl_zero"],
            "kl_div_with_sae": kl["kl_sae"]},
        "model_performance_preservation": {
            "ce_loss_score": (ce["ce_zero"] - ce["ce_sae"]) / (ce["ce_zero"] - ce["ce_clean"]),
            "ce_loss_with_ablation": ce["ce_zero"], "ce_loss_with_sae": ce["ce_sae"],
            "ce_loss_without_sae": ce["ce_clean"]},
        "reconstruction_quality": {
            "explained_variance": 1 - sums["sq_err"] / sums["sq_dev"], "mse": sums["sq_err"] / (n_tokens * sae.cfg.d_in),
            "cossim": sums["cos"] / n_tokens},
        "shrinkage": {
            "l2_norm_in": sums["norm_in"] / n_tokens, "l2_norm_out": sums["norm_out"] / n_tokens,
            "l2_ratio": sums["norm_out"] / sums["norm_in"],
            "relative_reconstruction_bias": sums["sq_out"] / sums["dot"]},
        "sparsity": {"l0": sums["l0"] / n_tokens, "l1": sums["l1"] / n_tokens},
        "misc_metrics": {"frac_alive": fired.float().mean().item()},
        "token_stats": {"total_tokens_eval_reconstruction": n_tokens, "total_tokens_eval_sparsity_variance": n_tokens},
    }
