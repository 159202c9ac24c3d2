"""actlab: the thin shared library behind Activations, Reproduced.

Load a model (:func:`load_model`), read and edit its activations at named
sites (:mod:`actlab.hooks`), fetch verified datasets (:mod:`actlab.data`),
harvest activations to disk (:mod:`actlab.harvest`), find directions in them
(:mod:`actlab.directions`), generate and score text with edits in
place (:mod:`actlab.generation`, :mod:`actlab.textscore`), train sparse
autoencoders (:mod:`actlab.sae`), measure (:mod:`actlab.metrics`), put intervals on comparisons
(:mod:`actlab.stats`) and record claims with computed verdicts (:mod:`actlab.claims`).
"""

from __future__ import annotations

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto (imported by transformers' dependencies) warns in every notebook without ipywidgets.
_warnings.filterwarnings("ignore", message="IProgress not found")

from . import claims, data, directions, generated, generation, harvest, hooks, metrics, plotting, pursuit, sae, stats, textscore
from .claims import Claims
from .errors import ActlabError
from .generation import PromptCache, generate_with_edits, score_candidates
from .hooks import capture, patch, run_with_cache
from .models import LanguageModel, known_models, load_model
from .notebook import notebook_setup
from .seeding import seed_everything

__all__ = [
    "ActlabError", "Claims", "LanguageModel", "PromptCache", "capture", "claims", "data", "directions",
    "generate_with_edits",
    "generated", "generation", "harvest", "hooks", "known_models", "load_model", "metrics", "notebook_setup", "patch",
    "plotting", "pursuit", "run_with_cache", "sae", "score_candidates", "seed_everything", "stats", "textscore",
    "__version__",
]
