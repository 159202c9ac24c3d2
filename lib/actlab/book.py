"""Build the Jupyter Book from the committed notebooks, with a scoreboard of every claim.

Nothing is executed: the book shows each notebook's committed default run. The
builder copies the notebooks into ``book/papers/`` (each copy opens with a
generated card: links to the paper and its code, the run behind the page and
whether its outputs still come from its source), writes one page per family
(from ``book/families.yml``), the scoreboard with its figure and the table of
contents, then calls Jupyter Book 1.x. The built site loads nothing from
outside itself (MathJax is bundled by ``sphinx-mathjax-offline``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import nbformat

from .claims import _COLOURS, VERDICTS, claims_from_notebook
from .errors import ActlabError
from .runner import REPO_ROOT, list_notebooks, load_smoke_times, notebook_title, smoke_seconds_by_notebook, \
    source_status

_LABELS = {v: v.replace("_", " ") for v in VERDICTS}
_BADGES = {v: f'<span class="verdict verdict-{v}">{_LABELS[v]}</span>' for v in VERDICTS}
# Shown in a column whose field an older claims table does not carry.
MISSING = "-"
STATUS_LABELS = {"current": "current", "stale": "stale", "not_recorded": "source not recorded"}
STATUS_HELP = {
    "current": "the committed outputs were produced from the committed source",
    "stale": "the source changed after this run: the outputs shown come from an older version of the notebook",
    "not_recorded": "this run was made before source hashes were recorded, so it cannot be matched to the source",
}
FIGURE_NAME = "verdicts-by-family.png"
# Generated next to the book sources; `figures/` is ignored by git everywhere in the project.
FIGURE_DIR = "figures"
_CARD_TAG = "actlab-paper-card"

_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_CODE_HOST_URL = re.compile(r"(?:https?://)?(?:www\.)?(?:github\.com|gitlab\.com)/[\w.-]+/[\w.-]+")
_ARXIV_ID = re.compile(r"arXiv:\s*(\d{4}\.\d{4,5})", re.IGNORECASE)
_ARXIV_URL_ID = re.compile(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# Clauses of a citation: "...; code: github.com/a/b; datasets: ..." keeps the datasets link out of "code".
_CLAUSE_BREAK = re.compile(r";|\.\s|\n\s*[-*]\s")


@dataclass(frozen=True)
class Link:
    """A labelled external link cited by a notebook."""

    label: str
    url: str


@dataclass(frozen=True)
class PaperLinks:
    """The paper a notebook reproduces and the authors' code, as the notebook itself cites them."""

    paper: Link | None
    code: tuple[Link, ...] = field(default_factory=tuple)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load_families(book_dir: Path) -> list[dict]:
    import yaml

    return yaml.safe_load((book_dir / "families.yml").read_text())


def _markdown_cells(notebook: dict) -> list[str]:
    return [str(c.get("source", "")) if isinstance(c.get("source", ""), str) else "".join(c["source"])
            for c in notebook.get("cells", []) if c.get("cell_type") == "markdown"]


def title_cell_index(notebook: dict) -> int | None:
    """Index of the cell holding the notebook's ``# Title`` (the first markdown cell with one), or None."""
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            source = source if isinstance(source, str) else "".join(source)
            if any(line.startswith("# ") for line in source.splitlines()):
                return index
    return None


def _normalise_code_url(url: str) -> Link:
    url = url.rstrip(".,)")
    if not url.startswith("http"):
        url = "https://" + url
    path = url.split("://", 1)[1].split("/", 1)[1]
    return Link(path.removesuffix(".git"), url)


def _code_links(text: str) -> list[Link]:
    """Code-host links in the clauses of ``text`` that mention code (markdown links and bare URLs)."""
    found: list[Link] = []
    for clause in _CLAUSE_BREAK.split(text):
        if not re.search(r"\bcode\b", clause, re.IGNORECASE):
            continue
        for _label, url in _MARKDOWN_LINK.findall(clause):
            if _CODE_HOST_URL.search(url):
                found.append(_normalise_code_url(url))
        # Bare URLs, once the markdown links (whose targets would match again) are taken out.
        for url in _CODE_HOST_URL.findall(_MARKDOWN_LINK.sub(" ", clause)):
            found.append(_normalise_code_url(url))
    return found


def _reference_entries(notebook: dict) -> list[str]:
    """The bullet points of the notebook's References section."""
    for source in _markdown_cells(notebook):
        first = source.lstrip().splitlines()[0] if source.strip() else ""
        if _HEADING.match(first) and _HEADING.match(first).group(2).strip().lower() == "references":
            return [entry.strip() for entry in re.split(r"\n(?=[-*]\s)", source) if entry.lstrip()[:1] in "-*"]
    return []


def paper_links(notebook: dict) -> PaperLinks:
    """The paper's link (the title cell's first non-code link, else its arXiv id) and the authors' code.

    Code links come from the clauses that mention code, in the title cell and in
    the References entry that cites the paper itself; other repositories a
    notebook cites (frameworks, datasets) are left out.
    """
    index = title_cell_index(notebook)
    if index is None:
        return PaperLinks(None)
    title_source = notebook["cells"][index]["source"]
    title_source = title_source if isinstance(title_source, str) else "".join(title_source)
    paper = next((Link(label, url) for label, url in _MARKDOWN_LINK.findall(title_source)
                  if not _CODE_HOST_URL.search(url)), None)
    if paper is None and (bare := _ARXIV_ID.search(title_source)):
        paper = Link(f"arXiv:{bare.group(1)}", f"https://arxiv.org/abs/{bare.group(1)}")
    code = _code_links(title_source)
    arxiv = _ARXIV_URL_ID.search(paper.url) if paper else None
    if arxiv:
        for entry in _reference_entries(notebook):
            if arxiv.group(1) in entry:
                code += _code_links(entry)
                break
    unique: dict[str, Link] = {}
    for link in code:
        unique.setdefault(link.url.lower().rstrip("/"), link)
    return PaperLinks(paper, tuple(unique.values()))


def claims_anchor(notebook: dict) -> str | None:
    """The HTML id Sphinx gives the notebook's "Claims" heading, or None when it has none.

    Sphinx names a section after its title with docutils' ``make_id``; a second
    section of the same name would get a numbered id, so the first one is taken.
    """
    from docutils.nodes import make_id

    for source in _markdown_cells(notebook):
        for line in source.splitlines():
            heading = _HEADING.match(line)
            if heading and re.match(r"claims\b", heading.group(2).strip(), re.IGNORECASE):
                return make_id(heading.group(2))
    return None


def collect(notebooks: dict[str, Path]) -> dict[str, dict]:
    """Per notebook, read from its committed file: title, run metadata, claims, source status, links."""
    entries = {}
    for slug, path in notebooks.items():
        nb = nbformat.read(path, as_version=4)
        table = claims_from_notebook(nb) or {"claims": []}
        entries[slug] = {"title": notebook_title(path), "run": dict(nb.metadata.get("actlab", {})),
                         "claims": table["claims"], "source_status": source_status(nb),
                         "links": paper_links(nb), "claims_anchor": claims_anchor(nb)}
    return entries


def format_duration(seconds: float | None) -> str:
    """``45 s`` below a minute and a half, else minutes with one decimal; ``-`` when unknown."""
    if seconds is None:
        return MISSING
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _status_badge(status: str) -> str:
    return (f'<span class="source-status source-{status}" title="{escape(STATUS_HELP[status])}">'
            f"{escape(STATUS_LABELS[status])}</span>")


def _field(claim: dict, key: str) -> str:
    value = claim.get(key)
    return MISSING if value in (None, "") else str(value)


def _measured(claim: dict) -> str:
    """The measured figure, with a separately recorded interval appended when the text lacks it."""
    measured = _field(claim, "measured")
    interval = claim.get("interval")
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        interval = f"[{interval[0]}, {interval[1]}]"
    if interval and str(interval) not in measured:
        measured = f"{measured} {interval}"
    return measured


def _claims_href(slug: str, entry: dict) -> str:
    anchor = entry.get("claims_anchor")
    return f"papers/{slug}.html" + (f"#{anchor}" if anchor else "")


def _run_facts(run: dict) -> str:
    """``2026-11-22 · commit fdc621e · 3.5 min`` for a run's metadata, ``-`` for what it lacks."""
    date = str(run.get("date", MISSING))[:10]
    return f"{date} · commit {run.get('git_commit', MISSING)} · {format_duration(run.get('runtime_s'))}"


def _placed_families(entries: dict[str, dict], families: list[dict]) -> list[tuple[dict, list[str]]]:
    """Each family with the slugs it holds that have notebooks, each slug in its first family only."""
    placed: set[str] = set()
    result = []
    for family in families:
        slugs = [s for s in family["slugs"] if s in entries and s not in placed]
        placed.update(slugs)
        if slugs:
            result.append((family, slugs))
    return result


def _counts_table(entries: dict[str, dict], placed: list[tuple[dict, list[str]]]) -> str:
    head = "".join(f'<th class="num">{_BADGES[v]}</th>' for v in VERDICTS)
    rows = []
    total: Counter = Counter()
    for family, slugs in placed:
        counts = Counter(c["verdict"] for s in slugs for c in entries[s]["claims"])
        total += counts
        cells = "".join(f'<td class="num">{counts[v] or ""}</td>' for v in VERDICTS)
        rows.append(f'<tr data-family="{escape(family["id"])}"><th scope="row">{escape(family["title"])}</th>'
                    f'<td class="num">{len(slugs)}</td><td class="num">{sum(counts.values())}</td>{cells}</tr>')
    cells = "".join(f'<td class="num">{total[v]}</td>' for v in VERDICTS)
    rows.append(f'<tr class="total"><th scope="row">All families</th><td class="num">{len(entries)}</td>'
                f'<td class="num">{sum(total.values())}</td>{cells}</tr>')
    return (f'<table class="actlab-counts"><thead><tr><th>family</th><th class="num">papers</th>'
            f'<th class="num">claims</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


_CLAIM_COLUMNS = ("paper", "claim", "paper's figure", "measured", "criterion", "criterion source", "verdict",
                  "link")


def _claims_table(entries: dict[str, dict], placed: list[tuple[dict, list[str]]]) -> str:
    """Every claim, one row each, under one header row per paper that carries its run and source status."""
    columns = "".join(f'<col class="col-{i}">' for i in range(len(_CLAIM_COLUMNS)))
    head = "".join(f'<th scope="col">{escape(name)}</th>' for name in _CLAIM_COLUMNS)
    body = []
    for family, slugs in placed:
        family_id = escape(family["id"])
        for slug in slugs:
            entry = entries[slug]
            status = entry["source_status"]
            body.append(
                f'<tr class="paper-row" data-family="{family_id}" data-slug="{escape(slug)}">'
                f'<th colspan="{len(_CLAIM_COLUMNS)}" scope="rowgroup"><a href="papers/{escape(slug)}.html">'
                f'{escape(entry["title"])}</a> <span class="paper-meta">{escape(family["title"])} · run '
                f'{escape(_run_facts(entry["run"]))}</span> {_status_badge(status)}</th></tr>')
            if not entry["claims"]:
                body.append(f'<tr class="claim-row" data-family="{family_id}" data-slug="{escape(slug)}" '
                            f'data-verdict="none"><td colspan="{len(_CLAIM_COLUMNS)}">no claims table in the '
                            f'committed run</td></tr>')
            for claim in entry["claims"]:
                verdict = claim["verdict"]
                reason = claim.get("reason")
                reason_html = f'<div class="reason">{escape(str(reason))}</div>' if reason else ""
                cells = [
                    f'<a href="papers/{escape(slug)}.html" title="{escape(entry["title"])}">{escape(slug)}</a>',
                    f'<b>{escape(_field(claim, "id"))}</b> {escape(_field(claim, "claim"))}',
                    escape(_field(claim, "paper")) + (f'<div class="where">{escape(str(claim["where"]))}</div>'
                                                      if claim.get("where") else ""),
                    escape(_measured(claim)),
                    escape(_field(claim, "criterion")),
                    escape(_field(claim, "criterion_source")),
                    _BADGES.get(verdict, escape(str(verdict))) + reason_html,
                    f'<a href="{escape(_claims_href(slug, entry))}">claims</a>',
                ]
                tds = "".join(f'<td class="c-{i}">{cell}</td>' for i, cell in enumerate(cells))
                body.append(f'<tr class="claim-row" data-family="{family_id}" data-slug="{escape(slug)}" '
                            f'data-verdict="{escape(str(verdict))}">{tds}</tr>')
    return (f'<div class="actlab-table-scroll"><table class="actlab-scoreboard-table"><colgroup>{columns}'
            f'</colgroup><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _filters(placed: list[tuple[dict, list[str]]], total_claims: int) -> str:
    """Filter controls; hidden until the script in ``_static/scoreboard.js`` wires them up."""
    families = "".join(f'<option value="{escape(f["id"])}">{escape(f["title"])}</option>' for f, _ in placed)
    verdicts = "".join(f'<option value="{v}">{_LABELS[v]}</option>' for v in VERDICTS)
    return ('<form class="actlab-filters" hidden><label>family <select name="family">'
            f'<option value="">all families</option>{families}</select></label> '
            f'<label>verdict <select name="verdict"><option value="">all verdicts</option>{verdicts}</select>'
            f'</label> <output name="shown">{total_claims} of {total_claims} claims</output></form>')


def _runs_table(entries: dict[str, dict], family_of: dict[str, str]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("paper", "family", "model", "profile", "CPU threads", "runtime",
                                              "date", "commit", "source"))
    rows = []
    for slug, entry in sorted(entries.items()):
        run = entry["run"]
        cells = [f'<a href="papers/{escape(slug)}.html">{escape(slug)}</a>', escape(family_of.get(slug, MISSING)),
                 escape(str(run.get("model", MISSING))), escape(str(run.get("profile", MISSING))),
                 escape(str(run.get("cpu_threads", MISSING))), format_duration(run.get("runtime_s")),
                 escape(str(run.get("date", MISSING))[:10]), f'<code>{escape(str(run.get("git_commit", MISSING)))}'
                 "</code>", _status_badge(entry["source_status"])]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="actlab-runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _raw_html(html: str) -> list[str]:
    # A raw block passes the HTML through untouched; inline HTML in Markdown would end at a blank line.
    return ["```{raw} html", html, "```", ""]


def scoreboard_markdown(entries: dict[str, dict], families: list[dict], figure: str | None = None) -> str:
    """The scoreboard page: totals, verdicts per family (figure and counts), every claim with filters, the runs.

    ``figure`` is the path of the verdicts-per-family PNG relative to the page, or None to leave it out.
    """
    placed = _placed_families(entries, families)
    family_of = {slug: family["title"] for family, slugs in placed for slug in slugs}
    counts = Counter(c["verdict"] for e in entries.values() for c in e["claims"])
    total_claims = sum(counts.values())
    statuses = Counter(e["source_status"] for e in entries.values())
    lines = [
        "# Scoreboard",
        "",
        "Every claim checked by every notebook, as measured in its committed default run on the offline "
        "default model. Verdicts are computed in the notebooks from the measurements; follow a claim's "
        "*claims* link for the notebook's own table, and the paper's page for the method, the figures and "
        "the discussion of each verdict.",
        "",
        f"**{len(entries)} papers, {total_claims} claims:** "
        + ", ".join(f"{counts[v]} {_BADGES[v]}" for v in VERDICTS if counts[v]),
        "",
    ]
    if statuses["stale"]:
        stale = ", ".join(f"[{slug}](papers/{slug}.ipynb)" for slug, e in sorted(entries.items())
                          if e["source_status"] == "stale")
        lines += [f"**{_status_badge('stale')} {statuses['stale']} of {len(entries)} notebooks:** their committed "
                  f"outputs come from an older version of their source ({stale}); their verdicts wait for a re-run.",
                  ""]
    if statuses["not_recorded"]:
        lines += [f"{_status_badge('not_recorded')} for {statuses['not_recorded']} of {len(entries)} notebooks: "
                  "their runs predate source hashes, so they cannot be matched to their current source.", ""]
    lines += ["## Verdicts by family", ""]
    if figure:
        lines += ["```{figure} " + figure, ":alt: Stacked horizontal bars, one per family of papers, "
                  "splitting its claims by verdict", ":name: fig-verdicts-by-family", "",
                  "Claims per family, by verdict.", "```", ""]
    lines += _raw_html(_counts_table(entries, placed))
    lines += ["## Every claim", "",
              f"One row per claim, under its paper and the run behind it. A column shows {MISSING} where the "
              "notebook's claims table does not record that field yet; a verdict's reason, when recorded, sits "
              "under it.", ""]
    lines += _raw_html('<div class="actlab-scoreboard">' + _filters(placed, total_claims)
                       + _claims_table(entries, placed) + "</div>")
    lines += ["## Runs behind these numbers", "",
              "Date, commit and runtime of each notebook's committed run, and whether its outputs still come "
              "from its committed source.", ""]
    lines += _raw_html(_runs_table(entries, family_of))
    return "\n".join(lines)


def verdicts_figure(entries: dict[str, dict], families: list[dict], path: Path) -> Path:
    """Draw the claims of each family as one horizontal bar stacked by verdict; write a PNG to ``path``."""
    from matplotlib.figure import Figure

    placed = _placed_families(entries, families)
    names = [textwrap.fill(family["title"], 30) for family, _ in placed][::-1]
    counts = [Counter(c["verdict"] for s in slugs for c in entries[s]["claims"]) for _, slugs in placed][::-1]
    figure = Figure(figsize=(9, 1.2 + 0.62 * max(len(placed), 1)), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    left = [0] * len(placed)
    for verdict in VERDICTS:
        widths = [c[verdict] for c in counts]
        bars = axes.barh(names, widths, left=left, color=_COLOURS[verdict], label=_LABELS[verdict], height=0.6)
        axes.bar_label(bars, labels=[str(w) if w else "" for w in widths], label_type="center", color="white",
                       fontsize=9, fontweight="bold")
        left = [a + b for a, b in zip(left, widths)]
    axes.set_xlabel("claims")
    axes.spines[["top", "right"]].set_visible(False)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(ncols=len(VERDICTS), loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No software stamp: the same counts give the same bytes.
    figure.savefig(path, metadata={"Software": None})
    return path


def paper_card_markdown(slug: str, entry: dict, smoke_seconds: dict[str, float], smoke_report: dict) -> str:
    """The card opening a paper's page: its paper and code, runtime per profile, the run and its source status."""
    links: PaperLinks = entry["links"]
    run = entry["run"]
    paper = f"[{links.paper.label}]({links.paper.url})" if links.paper else "not linked from the notebook"
    code = (" · ".join(f"[{link.label}]({link.url})" for link in links.code) if links.code
            else "none cited by the notebook")
    runtimes = {"default": "not recorded", "smoke": "not measured on this machine"}
    if run.get("profile") in runtimes and run.get("runtime_s") is not None:
        runtimes[run["profile"]] = f"{format_duration(run['runtime_s'])} (the run shown here)"
    if run.get("profile") != "smoke" and slug in smoke_seconds:
        when = str(smoke_report.get("date", ""))[:10]
        runtimes["smoke"] = (f"{format_duration(smoke_seconds[slug])} (fastest smoke run measured on this machine"
                             + (f", {when}" if when else "") + ")")
    facts = [f"{run.get('profile', MISSING)} profile", str(run.get("model", MISSING))]
    if run.get("cpu_threads"):
        facts.append(f"{run['cpu_threads']} CPU threads")
    facts += [str(run.get("date", MISSING))[:10], f"commit `{run.get('git_commit', MISSING)}`"]
    status = entry["source_status"]
    return "\n".join([
        f":::{{container}} {_CARD_TAG}",
        f"**Paper:** {paper} · **Authors' code:** {code}",
        "",
        f"**Runtime per profile:** default {runtimes['default']} · smoke {runtimes['smoke']}",
        "",
        f"**Run behind this page:** {', '.join(facts)}",
        "",
        f"**Source:** {_status_badge(status)} {STATUS_HELP[status]}.",
        ":::",
    ])


def write_paper_copy(source: Path, target: Path, card: str) -> None:
    """Copy a notebook into the book with ``card`` as a markdown cell right after its title cell."""
    nb = nbformat.read(source, as_version=4)
    index = title_cell_index(nb)
    cell = nbformat.v4.new_markdown_cell(card)
    cell.metadata["tags"] = [_CARD_TAG]
    nb.cells.insert(0 if index is None else index + 1, cell)
    nbformat.write(nb, target)


def family_markdown(family: dict, entries: dict[str, dict]) -> str:
    lines = [f"# {family['title']}", "", family["blurb"], "", "| paper | verdicts |", "|---|---|"]
    for slug in family["slugs"]:
        if slug in entries:
            counts = Counter(c["verdict"] for c in entries[slug]["claims"])
            summary = ", ".join(f"{counts[v]} {_BADGES[v]}" for v in VERDICTS if counts[v])
            lines.append(f"| [{_cell(entries[slug]['title'])}](../papers/{slug}.ipynb) | {summary} |")
    return "\n".join(lines) + "\n"


def write_sources(book_dir: Path | None = None) -> Path:
    """Write the generated pages, the scoreboard figure and the table of contents; return the book directory."""
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
    smoke_report = load_smoke_times()
    smoke_seconds = smoke_seconds_by_notebook(smoke_report)
    for slug, path in notebooks.items():
        write_paper_copy(path, papers_dir / f"{slug}.ipynb",
                         paper_card_markdown(slug, entries[slug], smoke_seconds, smoke_report))
    figure = verdicts_figure(entries, families, book_dir / FIGURE_DIR / FIGURE_NAME)
    (book_dir / "scoreboard.md").write_text(
        scoreboard_markdown(entries, families, figure.relative_to(book_dir).as_posix()), encoding="utf-8")
    toc = ["format: jb-book", "root: intro", "chapters:"]
    if (book_dir / "tour.ipynb").exists():
        toc.append("- file: tour")
    toc.append("- file: scoreboard")
    for family, slugs in _placed_families(entries, families):
        (families_dir / f"{family['id']}.md").write_text(family_markdown(family, entries), encoding="utf-8")
        toc.append(f"- file: families/{family['id']}")
        toc.append("  sections:")
        toc += [f"  - file: papers/{slug}" for slug in slugs]
    (book_dir / "_toc.yml").write_text("\n".join(toc) + "\n", encoding="utf-8")
    return book_dir


class _IdCollector(HTMLParser):
    """Every ``id`` attribute of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


def html_ids(page: Path) -> set[str]:
    """The ids defined in a built HTML page."""
    collector = _IdCollector()
    collector.feed(page.read_text(encoding="utf-8", errors="replace"))
    return collector.ids


def check_claims_anchors(html_dir: Path, notebooks: dict[str, Path]) -> list[str]:
    """Paper pages whose "Claims" heading did not get the id the scoreboard links to (empty when all did)."""
    missing = []
    for slug, path in notebooks.items():
        anchor = claims_anchor(nbformat.read(path, as_version=4))
        page = html_dir / "papers" / f"{slug}.html"
        if anchor and (not page.exists() or anchor not in html_ids(page)):
            missing.append(f"papers/{slug}.html#{anchor}")
    return missing


def build_book(book_dir: str | Path | None = None) -> Path:
    """Generate the sources and build the HTML book offline; return the path of its index page."""
    directory = write_sources(Path(book_dir) if book_dir else None)
    executable = Path(sys.executable).parent / "jupyter-book"
    command = [str(executable) if executable.exists() else "jupyter-book", "build", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise ActlabError("jupyter-book build failed: " + " / ".join(tail))
    html_dir = directory / "_build" / "html"
    # The scoreboard links into each page's claims section by an id computed before the build: check it exists.
    missing = check_claims_anchors(html_dir, list_notebooks())
    if missing:
        raise ActlabError("scoreboard links to claims sections that the build did not create: " + ", ".join(missing))
    return html_dir / "index.html"
