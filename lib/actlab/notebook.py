"""The setup every notebook runs before its method, in one call."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from . import plotting
from .seeding import seed_everything


@dataclass(frozen=True)
class NotebookSetup:
    """What :func:`notebook_setup` set, printed in the notebook and kept in its outputs."""

    seed: int
    threads: int
    grad_enabled: bool
    warnings: str
    transformers_verbosity: str
    theme: str

    def __str__(self) -> str:
        return (f"seed {self.seed}, {self.threads} CPU thread(s), gradients "
                f"{'on' if self.grad_enabled else 'off'}, warnings {self.warnings}, "
                f"transformers logging: {self.transformers_verbosity}, theme: {self.theme}")


def notebook_setup(seed: int = 0, threads: int | None = None, grad_enabled: bool = False,
                   quiet_warnings: bool = True) -> NotebookSetup:
    """Seed and fix the thread count, switch gradients off, quieten library chatter, set the figure theme.

    Gradients are off because notebooks mostly read activations; a training loop turns them
    on locally with ``torch.enable_grad()``. ``quiet_warnings`` hides library warnings
    (deprecations and the like), which would otherwise land in the committed outputs.
    """
    import transformers

    if quiet_warnings:
        warnings.filterwarnings("ignore")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_grad_enabled(grad_enabled)
    plotting.set_theme()
    used_threads = seed_everything(seed, threads)
    return NotebookSetup(seed=seed, threads=used_threads, grad_enabled=grad_enabled,
                         warnings="hidden" if quiet_warnings else "shown", transformers_verbosity="errors only",
                         theme="seaborn whitegrid, colour-blind palette")
