"""Tiny throwaway notebooks for the runner and sweep tests, written from (kind, source, tags) triples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nbformat

Cell = tuple[str, str, list[str] | None]


def write_probe_notebook(root: Path, cells: Sequence[Cell], name: str = "probe") -> Path:
    """Write ``root/notebooks/<name>.ipynb`` from ``cells``; return the notebooks folder."""
    nb = nbformat.v4.new_notebook()
    for kind, source, tags in cells:
        cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebooks = Path(root) / "notebooks"
    notebooks.mkdir(exist_ok=True)
    nbformat.write(nb, notebooks / f"{name}.ipynb")
    return notebooks
