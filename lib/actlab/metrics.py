"""Language-model metrics shared by the notebooks: loss, perplexity, KL, FVU, CE loss recovered."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Mapping

import torch
import torch.nn.functional as F

from .hooks import EditFn, patch, zero_ablate
from .models import LanguageModel


def token_losses(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token cross-entropy (nats) and a mask of the positions that count.

    Position t predicts token t+1; a position counts when both tokens are real.
    Returns ``(losses, mask)``, each ``(batch, seq - 1)``.
    """
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    losses = -logprobs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    if attention_mask is None:
        mask = torch.ones_like(losses, dtype=torch.bool)
    else:
        mask = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    return losses, mask


@torch.no_grad()
def next_token_loss(
    lm: LanguageModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    edits: Mapping[str, EditFn] | None = None,
    batch_size: int = 16,
) -> float:
    """Mean next-token loss (nats per token) over real tokens, optionally with sites patched."""
    total, count = 0.0, 0
    for start in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[start:start + batch_size].to(lm.device)
        mask = None if attention_mask is None else attention_mask[start:start + batch_size].to(lm.device)
        with patch(lm, edits) if edits else nullcontext():
            logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        losses, valid = token_losses(logits, ids, mask)
        total += losses[valid].sum().item()
        count += int(valid.sum())
    return total / max(count, 1)


@torch.no_grad()
def perplexity(lm: LanguageModel, text: str, context: int = 512, stride: int = 256,
               max_tokens: int | None = None) -> float:
    """Strided perplexity of one long text: each token is scored once, with up to ``context`` tokens of context.

    Windows of ``context`` tokens advance by ``stride``; only the tokens new to a
    window are scored, the usual sliding-window evaluation.
    """
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"][0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    nll, scored, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        window = ids[begin:end].unsqueeze(0).to(lm.device)
        logits = lm.model(input_ids=window, use_cache=False).logits
        losses, _ = token_losses(logits, window)
        new = end - max(previous_end, begin + 1)
        nll += losses[0, -new:].sum().item()
        scored += new
        previous_end = end
        if end == len(ids):
            break
    return math.exp(nll / scored)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in nats over the last dimension, for each leading position."""
    logp = F.log_softmax(logits_p.float(), dim=-1)
    logq = F.log_softmax(logits_q.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) in bits over the last dimension."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1) / math.log(2)


def fraction_variance_unexplained(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """||x - x_hat||^2 summed over tokens, over the total variance of x about its mean."""
    x, x_hat = x.float().reshape(-1, x.shape[-1]), x_hat.float().reshape(-1, x.shape[-1])
    return ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def ce_loss_recovered(clean_loss: float, patched_loss: float, ablated_loss: float) -> float:
    """(H_0 - H*) / (H_0 - H_orig): 1 when the patch is as good as the clean model, 0 when as bad as ablation."""
    return (ablated_loss - patched_loss) / (ablated_loss - clean_loss)


def keep_first_position(edit: EditFn) -> EditFn:
    """The edit everywhere but position 0, which keeps its value.

    Position 0 (BOS on most tokenizers) carries a residual many times the norm of the
    others; an SAE trained without it, or a zero ablation there, would measure the
    damage at that one position rather than at the site.
    """

    def edit_after_first(value: torch.Tensor) -> torch.Tensor:
        edited = edit(value)
        return torch.cat([value[:, :1], edited[:, 1:]], dim=1)

    return edit_after_first


def ce_loss_score(lm: LanguageModel, site: str, reconstruct: EditFn, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None, batch_size: int = 16, drop_first: bool = False
                  ) -> dict[str, float]:
    """Clean, patched and zero-ablated losses at ``site`` on the same tokens, and the recovered fraction.

    ``drop_first=True`` leaves position 0 unpatched in both the reconstruction and the
    ablation: the setting for an SAE trained with the harvester's ``drop_first``. The
    default patches every position, as this function always has.
    """
    wrap = keep_first_position if drop_first else (lambda edit: edit)
    clean = next_token_loss(lm, input_ids, attention_mask, batch_size=batch_size)
    patched = next_token_loss(lm, input_ids, attention_mask, {site: wrap(reconstruct)}, batch_size=batch_size)
    ablated = next_token_loss(lm, input_ids, attention_mask, {site: wrap(zero_ablate())}, batch_size=batch_size)
    return {"clean_loss": clean, "patched_loss": patched, "ablated_loss": ablated,
            "ce_loss_recovered": ce_loss_recovered(clean, patched, ablated)}
