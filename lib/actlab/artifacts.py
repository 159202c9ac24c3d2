"""Shared artifacts: the standard SAEs, built once per machine and read from the cache by every notebook.

``actlab artifacts build`` builds the full standard SAE (``sae.STANDARD_TOKENS`` training
tokens) at the middle layer's ``resid_post`` of each offline model, or of the
``--model``/``--site`` given; ``actlab artifacts list`` prints what the cache holds with
its core metrics on WikiText-2 test. A build interrupted midway resumes: finished harvest
shards are kept and SAE training restarts from its last checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .models import cache_dir, known_models, load_model


@dataclass(frozen=True)
class CachedSAE:
    directory: Path
    model: str
    site: str
    d_sae: int
    k: int
    train_tokens: int
    core: dict | None


def standard_site(lm) -> str:  # noqa: ANN001 - a LanguageModel
    """The site a standard SAE sits at when none is named: the middle layer's residual output."""
    return f"resid_post.{lm.n_layers // 2}"


def build(models: list[str] | None = None, site: str | None = None, progress: bool = True) -> list[dict]:
    """Build (or find in the cache) the full standard SAE of each model; return their records."""
    from .sae import standard_sae

    records = []
    for name in models or known_models():
        lm = load_model(name)
        _, record = standard_sae(lm, site=site or standard_site(lm), progress=progress)
        records.append(record)
    return records


def cached() -> list[CachedSAE]:
    """Every SAE in the cache, with its core metrics when they were measured."""
    found = []
    for record_path in sorted((cache_dir() / "saes").glob("*/actlab.json")):
        record = json.loads(record_path.read_text())
        core_path = record_path.parent / "core_metrics.json"
        core = json.loads(core_path.read_text())["eval_result_metrics"] if core_path.exists() else None
        found.append(CachedSAE(record_path.parent, record["model"], record["site"], record["cfg"]["d_sae"],
                               record["cfg"]["k"], record["train_tokens"], core))
    return found


def has_full_standard_sae(model: str) -> bool:
    """Whether the cache holds an SAE of ``model`` trained on a full standard SAE's data."""
    from .sae import STANDARD_TOKENS

    return any(e.model == model and e.train_tokens >= STANDARD_TOKENS for e in cached())


def announce_build(notebook_source: str, model: str, profile: str) -> str | None:
    """The line ``actlab run`` prints before a notebook that will first build the standard SAE."""
    if profile == "smoke" or "standard_sae(" not in notebook_source or has_full_standard_sae(model):
        return None
    return (f"this notebook uses the standard SAE of {model}, which is not in the cache yet: it is built first "
            "(about 12 minutes on 2 cores, once per machine; `make artifacts` builds it ahead)")


def format_cached(entries: list[CachedSAE]) -> str:
    """A table of the cache for the terminal."""
    lines = [f"{'model':14s} {'site':14s} {'latents':>7s} {'k':>3s} {'tokens':>10s} {'L0':>5s} {'EV':>6s} "
             f"{'CE score':>8s} {'alive':>6s}"]
    for e in entries:
        if e.core:
            l0 = e.core["sparsity"]["l0"]
            ev = e.core["reconstruction_quality"]["explained_variance"]
            ce = e.core["model_performance_preservation"]["ce_loss_score"]
            alive = e.core["misc_metrics"]["frac_alive"]
            quality = f"{l0:5.1f} {ev:6.3f} {ce:8.3f} {alive:6.3f}"
        else:
            quality = f"{'-':>5s} {'-':>6s} {'-':>8s} {'-':>6s}"
        lines.append(f"{e.model:14s} {e.site:14s} {e.d_sae:7d} {e.k:3d} {e.train_tokens:10,d} {quality}")
    return "\n".join(lines) if entries else "the cache holds no SAE yet: `actlab artifacts build` builds them"
