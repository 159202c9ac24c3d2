"""Repeated code across notebooks, found by a standard copy-paste detector.

Each notebook's code cells are exported with jupytext (percent format, one
``# %%`` marker per cell) and handed to jscpd (an npm package, installed by
``make setup`` under ``.venv/node``). A block of ``MIN_LINES`` or more lines
that two notebooks share is reported with the cell it sits in, in each.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

MIN_LINES = 8
REPO = Path(__file__).resolve().parents[1]
JSCPD = REPO / ".venv" / "node" / "node_modules" / ".bin" / "jscpd"


@dataclass(frozen=True)
class Place:
    slug: str
    first: tuple[int, int]  # (cell, line): the cell's index in the .ipynb from 0, the line in it from 1
    last: tuple[int, int]

    def __str__(self) -> str:
        (cell, line), (end_cell, end_line) = self.first, self.last
        end = f"{end_line}" if end_cell == cell else f"cell {end_cell} line {end_line}"
        return f"notebooks/{self.slug}.ipynb cell {cell} line {line} to {end}"


@dataclass(frozen=True)
class Repeat:
    places: tuple[Place, Place]
    lines: int
    key: str  # the two notebooks and a hash of the block, stable across unrelated edits

    def __str__(self) -> str:
        return f"{self.lines} lines repeated: {self.places[0]} and {self.places[1]} [{self.key}]"


def jscpd_command() -> list[str]:
    found = str(JSCPD) if JSCPD.exists() else shutil.which("jscpd")
    if not found:
        raise RuntimeError("jscpd is not installed: run `make setup` (it installs jscpd with npm under .venv/node)")
    return [found]


def _export(notebook: Path, out_dir: Path) -> tuple[Path, list[tuple[int, int]]]:
    """Write the code cells as a percent-format script; return it and, per script line, (cell, line in cell)."""
    nb = nbformat.read(notebook, as_version=4)
    # Papermill writes the injected-parameters cell: the same few lines in every executed notebook, not code.
    kept = [(index, cell) for index, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", [])]
    code_only = nbformat.v4.new_notebook()
    # No header: every notebook's kernel metadata would otherwise be the first "repeat".
    code_only.metadata["jupytext"] = {"notebook_metadata_filter": "-all", "cell_metadata_filter": "-all"}
    code_only.cells = [nbformat.v4.new_code_cell(cell.source) for _, cell in kept]
    text = jupytext.writes(code_only, fmt="py:percent")
    where: list[tuple[int, int]] = []
    cell, line_in_cell = -1, 0
    for line in text.splitlines():
        if line.startswith("# %%"):
            cell, line_in_cell = cell + 1, 0
        else:
            line_in_cell += 1
        where.append((kept[max(cell, 0)][0], max(line_in_cell, 1)))
    script = out_dir / f"{notebook.stem}.py"
    script.write_text(text)
    return script, where


def find_repeats(notebooks: list[Path], min_lines: int = MIN_LINES) -> list[Repeat]:
    """Blocks of at least ``min_lines`` lines that appear in two different notebooks."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        scripts = tmp_dir / "scripts"
        scripts.mkdir()
        maps = {}
        for notebook in notebooks:
            script, where = _export(notebook, scripts)
            maps[script.name] = (notebook.stem, where)
        done = subprocess.run(
            jscpd_command() + ["--min-lines", str(min_lines), "--min-tokens", "10", "--format", "python",
                               "--reporters", "json", "--output", str(tmp_dir / "report"), "--silent",
                               "--no-gitignore", str(scripts)],
            capture_output=True, text=True)
        report_file = tmp_dir / "report" / "jscpd-report.json"
        if done.returncode != 0 or not report_file.exists():
            raise RuntimeError(f"jscpd failed: {(done.stdout + done.stderr)[-1500:]}")
        report = json.loads(report_file.read_text())
    repeats = []
    for dup in report.get("duplicates", []):
        places = []
        for side in ("firstFile", "secondFile"):
            slug, where = maps[Path(dup[side]["name"]).name]
            start, end = dup[side]["start"], dup[side]["end"]
            places.append(Place(slug, where[start - 1], where[min(end, len(where)) - 1]))
        if places[0].slug == places[1].slug:
            continue  # a repeat inside one notebook is its own business (a helper function there)
        places.sort(key=lambda p: p.slug)
        block = "\n".join(line.strip() for line in dup["fragment"].splitlines() if line.strip())
        digest = hashlib.sha1(block.encode()).hexdigest()[:10]
        repeats.append(Repeat((places[0], places[1]), int(dup["lines"]),
                              f"{places[0].slug}+{places[1].slug}:{digest}"))
    return sorted(repeats, key=lambda r: r.key)
