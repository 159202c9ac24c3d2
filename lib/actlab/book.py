"""Build the Jupyter Book from the committed notebooks, with a scoreboard of every claim.

Nothing is executed: the book shows each notebook's committed default run. The
builder copies the notebooks into ``book/papers/``, writes one page per family
(from ``book/families.yml``), the scoreboard and the table of contents, then
calls Jupyter Book 1.x.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nbformat

from .claims import VERDICTS, claims_from_notebook
from .errors import ActlabError
from .runner import REPO_ROOT, list_notebooks, notebook_title

_BADGES = {v: f'<span class="verdict verdict-{v}">{v.replace("_", " ")}</span>' for v in VERDICTS}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load_families(book_dir: Path) -> list[dict]:
    import yaml

    return yaml.safe_load((book_dir / "families.yml").read_text())


def collect(notebooks: dict[str, Path]) -> dict[str, dict]:
    """Per notebook: title, run metadata and claims, read from the committed outputs."""
    entries = {}
    for slug, path in notebooks.items():
        nb = nbformat.read(path, as_version=4)
        table = claims_from_notebook(nb) or {"claims": []}
        entries[slug] = {"title": notebook_title(path), "run": nb.metadata.get("actlab", {}),
                         "claims": table["claims"]}
    return entries


def scoreboard_markdown(entries: dict[str, dict], families: list[dict]) -> str:
    """The scoreboard page: totals, then one row per claim, grouped by family."""
    counts = Counter(c["verdict"] for e in entries.values() for c in e["claims"])
    lines = [
        "# Scoreboard",
        "",
        "Every claim checked by every notebook, as measured in its committed default run on the offline "
        "default model. Verdicts are computed in the notebooks from the measurements; follow a paper's "
        "link for the method, the figures and the discussion of each verdict.",
        "",
        f"**{len(entries)} papers, {sum(counts.values())} claims:** "
        + ", ".join(f"{counts[v]} {_BADGES[v]}" for v in VERDICTS if counts[v]),
        "",
    ]
    placed = set()
    for family in families:
        slugs = [s for s in family["slugs"] if s in entries and s not in placed]
        if not slugs:
            continue
        lines += [f"## {family['title']}", "",
                  "| paper | id | claim | paper's figure | measured | verdict |", "|---|---|---|---|---|---|"]
        for slug in slugs:
            placed.add(slug)
            entry = entries[slug]
            for index, claim in enumerate(entry["claims"]):
                paper = f"[{_cell(entry['title'])}](papers/{slug}.ipynb)" if index == 0 else ""
                lines.append(
                    f"| {paper} | {claim['id']} | {_cell(claim['claim'])} | "
                    f"{_cell(claim['paper'])} | {_cell(claim['measured'])} | {_BADGES[claim['verdict']]} |")
        lines.append("")
    runs = ["| paper | model | profile | runtime | date | commit |", "|---|---|---|---|---|---|"]
    for slug, entry in sorted(entries.items()):
        run = entry["run"]
        runtime = f"{run['runtime_s'] / 60:.1f} min" if "runtime_s" in run else "-"
        runs.append(f"| {slug} | {run.get('model', '-')} | {run.get('profile', '-')} | {runtime} | "
                    f"{str(run.get('date', '-'))[:10]} | {run.get('git_commit', '-')} |")
    lines += ["## Runs behind these numbers", "", *runs, ""]
    return "\n".join(lines)


def family_markdown(family: dict, entries: dict[str, dict]) -> str:
    lines = [f"# {family['title']}", "", family["blurb"], "", "| paper | verdicts |", "|---|---|"]
    for slug in family["slugs"]:
        if slug in entries:
            counts = Counter(c["verdict"] for c in entries[slug]["claims"])
            summary = ", ".join(f"{counts[v]} {_BADGES[v]}" for v in VERDICTS if counts[v])
            lines.append(f"| [{_cell(entries[slug]['title'])}](../papers/{slug}.ipynb) | {summary} |")
    return "\n".join(lines) + "\n"


def write_sources(book_dir: Path | None = None) -> Path:
    """Write the generated pages and the table of contents; return the book directory."""
    book_dir = Path(book_dir) if book_dir else REPO_ROOT / "book"
    notebooks = list_notebooks()
    if not notebooks:
        raise ActlabError("no notebooks to publish under notebooks/")
    families = _load_families(book_dir)
    listed = {slug for family in families for slug in family["slugs"]}
    orphans = sorted(set(notebooks) - listed)
    if orphans:
        families = families + [{"id": "other", "title": "Other papers", "blurb": "Not yet filed in a family.",
                                "slugs": orphans}]
    entries = collect(notebooks)
    papers_dir = book_dir / "papers"
    families_dir = book_dir / "families"
    for generated in (papers_dir, families_dir):
        shutil.rmtree(generated, ignore_errors=True)
        generated.mkdir(parents=True)
    for slug, path in notebooks.items():
        shutil.copyfile(path, papers_dir / f"{slug}.ipynb")
    (book_dir / "scoreboard.md").write_text(scoreboard_markdown(entries, families), encoding="utf-8")
    toc = ["format: jb-book", "root: intro", "chapters:"]
    if (book_dir / "tour.ipynb").exists():
        toc.append("- file: tour")
    toc.append("- file: scoreboard")
    placed = set()
    for family in families:
        slugs = [s for s in family["slugs"] if s in notebooks and s not in placed]
        if not slugs:
            continue
        placed.update(slugs)
        (families_dir / f"{family['id']}.md").write_text(family_markdown(family, entries), encoding="utf-8")
        toc.append(f"- file: families/{family['id']}")
        toc.append("  sections:")
        toc += [f"  - file: papers/{slug}" for slug in slugs]
    (book_dir / "_toc.yml").write_text("\n".join(toc) + "\n", encoding="utf-8")
    return book_dir


def build_book(book_dir: str | Path | None = None) -> Path:
    """Generate the sources and build the HTML book offline; return the path of its index page."""
    directory = write_sources(Path(book_dir) if book_dir else None)
    executable = Path(sys.executable).parent / "jupyter-book"
    command = [str(executable) if executable.exists() else "jupyter-book", "build", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise ActlabError("jupyter-book build failed: " + " / ".join(tail))
    return directory / "_build" / "html" / "index.html"
