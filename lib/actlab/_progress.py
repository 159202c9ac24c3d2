"""Progress bars: notebook widgets when ipywidgets is installed, plain text otherwise (never a warning)."""

from __future__ import annotations

try:
    import ipywidgets  # noqa: F401

    from tqdm.auto import tqdm
except ImportError:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
