"""actlab: the thin shared library behind Activations, Reproduced.

Load a model (:func:`load_model`), read and edit its activations at named
sites (:mod:`actlab.hooks`), fetch verified datasets (:mod:`actlab.data`),
harvest activations to disk (:mod:`actlab.harvest`), train sparse
autoencoders (:mod:`actlab.sae`), measure (:mod:`actlab.metrics`), put intervals on comparisons
(:mod:`actlab.stats`) and record claims with computed verdicts (:mod:`actlab.claims`).
"""

from __future__ import annotations

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto (imported by transformers' dependencies) warns in every notebook without ipywidgets.
_warnings.filterwarnings("ignore", message="IProgress not found")

from . import claims, data, generated, harvest, hooks, metrics, plotting, pursuit, sae, stats
from .claims import Claims
from .errors import ActlabError
from .hooks import capture, patch, run_with_cache
from .models import LanguageModel, known_models, load_model
from .notebook import notebook_setup
from .seeding import seed_everything

__all__ = [
    "ActlabError", "Claims", "LanguageModel", "capture", "claims", "data", "generated", "harvest", "hooks",
    "known_models", "load_model", "metrics", "notebook_setup", "patch", "plotting", "pursuit", "run_with_cache", "sae",
    "seed_everything", "stats", "__version__",
]
