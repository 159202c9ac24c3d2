"""The book: scoreboard generation (fast, synthetic notebooks) and the built site in a real browser (slow)."""

from __future__ import annotations

import json
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import sitecheck

from actlab import book
from actlab.claims import _COLOURS, CLAIMS_MIME, VERDICTS
from actlab.runner import source_hash

FAMILIES = [{"id": "sae", "title": "Sparse things", "blurb": "b", "slugs": ["new-style", "old-style"]},
            {"id": "quant", "title": "Quantized things", "blurb": "b", "slugs": ["stale-one"]}]


def _notebook(title_cell: str, claims: list[dict], run: dict, sha: str | None) -> nbformat.NotebookNode:
    """A committed-looking notebook: title, a Claims section whose output carries the claims table, run metadata."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(title_cell), nbformat.v4.new_markdown_cell("## Claims"),
                nbformat.v4.new_code_cell("claims.show()")]
    nb.cells[2].outputs = [nbformat.v4.new_output(
        "display_data", data={CLAIMS_MIME: json.dumps({"slug": "x", "claims": claims}), "text/plain": "table"})]
    nb.metadata["actlab"] = dict(run)
    if sha == "match":
        nb.metadata["actlab"]["source_sha256"] = source_hash(nb)
    elif sha:
        nb.metadata["actlab"]["source_sha256"] = sha
    return nb


RUN = {"runtime_s": 211.0, "date": "2026-11-22T00:17:34+00:00", "git_commit": "fdc621e", "model": "smollm2-135m",
       "profile": "default", "cpu_threads": 2}
NEW_CLAIM = {"id": "C1", "claim": "ITDA is close to the SAE", "paper": "0.94 vs 0.97",
             "measured": "0.42 [0.38, 0.47] (95% bootstrap)", "criterion": "ITDA >= 0.75 x SAE",
             "criterion_source": "card", "verdict": "inconclusive", "reason": "SAE below its bar"}
OLD_CLAIM = {"id": "C2", "claim": "Old table <without> new keys", "paper": "1.0", "measured": "0.9",
             "criterion": "measured >= 0.8", "verdict": "reproduced"}


@pytest.fixture()
def entries(tmp_path: Path) -> dict[str, dict]:
    notebooks = {
        "new-style": _notebook("# New style\n\nA. Author. [arXiv:2401.00001](https://arxiv.org/abs/2401.00001) · "
                               "code: [me/fake](https://github.com/me/fake)", [NEW_CLAIM], RUN, "match"),
        "old-style": _notebook("# Old style\n\nNo links here.", [OLD_CLAIM], RUN, None),
        "stale-one": _notebook("# Stale one\n\narXiv:2402.00002", [dict(OLD_CLAIM, verdict="partial")], RUN, "0" * 64),
    }
    paths = {}
    for slug, nb in notebooks.items():
        paths[slug] = tmp_path / f"{slug}.ipynb"
        nbformat.write(nb, paths[slug])
    return book.collect(paths)


class _TableRows(HTMLParser):
    """Rows of the tables in an HTML fragment: (row class, data attributes, cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, dict, list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tr":
            self.rows.append((attributes.get("class") or "", attributes, []))
        elif tag in ("td", "th") and self.rows:
            self._cell = []
            self.rows[-1][2].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None and self.rows:
            cells = self.rows[-1][2]
            cells[-1] = (cells[-1] + data).strip()


def _rows(markdown: str, row_class: str) -> list[tuple[str, dict, list[str]]]:
    parser = _TableRows()
    parser.feed(markdown)
    return [row for row in parser.rows if row[0] == row_class]


def test_scoreboard_shows_new_fields_dashes_for_old_tables_and_source_status(entries):
    assert {slug: e["source_status"] for slug, e in entries.items()} == {
        "new-style": "current", "old-style": "not_recorded", "stale-one": "stale"}
    page = book.scoreboard_markdown(entries, FAMILIES, figure="figures/verdicts.png")
    claims = {attributes["data-slug"]: cells for _, attributes, cells in _rows(page, "claim-row")}
    assert list(claims) == ["new-style", "old-style", "stale-one"]
    columns = dict(zip(book._CLAIM_COLUMNS, claims["new-style"]))
    assert columns["claim"] == "C1 ITDA is close to the SAE"
    assert columns["measured"] == "0.42 [0.38, 0.47] (95% bootstrap)"
    assert columns["criterion source"] == "card"
    assert columns["verdict"] == "inconclusiveSAE below its bar"  # the reason sits under the badge
    old = dict(zip(book._CLAIM_COLUMNS, claims["old-style"]))
    assert old["criterion source"] == book.MISSING
    assert old["verdict"] == "reproduced"
    assert "&lt;without&gt;" in page, "claim text is escaped in the HTML table"
    # Every claim links to the Claims section of its notebook page.
    assert 'href="papers/new-style.html#claims"' in page
    headers = {attributes["data-slug"]: cells[0] for _, attributes, cells in _rows(page, "paper-row")}
    assert headers["new-style"].endswith("current")
    assert headers["old-style"].endswith("source not recorded")
    assert headers["stale-one"].endswith("stale")
    assert "2026-11-22 · commit fdc621e · 3.5 min" in headers["stale-one"]
    # Counts per family and overall, and the filters with one option per verdict.
    counts = {cells[0]: cells[1:] for _, _, cells in _rows(page, "") + _rows(page, "total") if cells}
    assert counts["Sparse things"][:2] == ["2", "2"]
    assert counts["All families"] == ["3", "3", "1", "1", "0", "1", "0"]
    assert all(f'<option value="{verdict}">' in page for verdict in VERDICTS)
    assert "```{figure} figures/verdicts.png" in page
    assert "stale-one" in page.split("## Verdicts by family")[0], "the stale notebook is named above the tables"


def test_paper_card_links_paper_and_code_and_states_runtimes(entries):
    card = book.paper_card_markdown("new-style", entries["new-style"], {}, {})
    assert "[arXiv:2401.00001](https://arxiv.org/abs/2401.00001)" in card
    assert "[me/fake](https://github.com/me/fake)" in card
    assert "default 3.5 min (the run shown here)" in card
    assert "smoke not measured on this machine" in card
    assert "commit `fdc621e`" in card and "2026-11-22" in card
    measured = book.paper_card_markdown("stale-one", entries["stale-one"], {"stale-one": 31.6},
                                        {"date": "2026-12-01T10:00:00+00:00"})
    assert "smoke 32 s (fastest smoke run measured on this machine, 2026-12-01)" in measured
    assert "[arXiv:2402.00002](https://arxiv.org/abs/2402.00002)" in measured
    assert "none cited by the notebook" in measured
    assert "source-stale" in measured
    assert "source not recorded" in book.paper_card_markdown("old-style", entries["old-style"], {}, {})


def test_code_links_come_from_the_clauses_about_code_only():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A paper\n\nSomeone. [arXiv:2502.16681](https://arxiv.org/abs/2502.16681)"),
        nbformat.v4.new_markdown_cell(
            "## References\n\n- S. K. *A paper.* [arXiv:2502.16681](https://arxiv.org/abs/2502.16681); code: "
            "github.com/JoshEngels/SAE-Probes; datasets: github.com/sae-probes/sae-probes (MIT)\n"
            "- A framework the code builds on: [x/framework](https://github.com/x/framework)")]
    links = book.paper_links(nb)
    assert links.paper == book.Link("arXiv:2502.16681", "https://arxiv.org/abs/2502.16681")
    assert links.code == (book.Link("JoshEngels/SAE-Probes", "https://github.com/JoshEngels/SAE-Probes"),)


def test_verdict_colours_of_the_css_match_the_claims_tables():
    css = (Path(book.__file__).resolve().parents[2] / "book" / "_static" / "verdicts.css").read_text()
    for verdict in VERDICTS:
        rule = re.search(rf"\.verdict-{verdict}\s*{{\s*color:\s*(#[0-9a-fA-F]{{6}})", css)
        assert rule, f"verdicts.css has no colour for {verdict}"
        assert rule.group(1).lower() == _COLOURS[verdict].lower()


def test_verdicts_figure_is_a_png(entries, tmp_path):
    path = book.verdicts_figure(entries, FAMILIES, tmp_path / "figures" / "verdicts.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The browser test: the real book, built once, served locally, every page loaded in Chromium.


@pytest.fixture(scope="session")
def built_site() -> Path:
    return book.build_book().parent


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed; {sitecheck.INSTALL_HINT}")
    if sitecheck.chromium_path() is None:
        pytest.fail(f"chromium not found on PATH; {sitecheck.INSTALL_HINT}")
    with sync_playwright() as playwright:
        chromium = sitecheck.launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.mark.slow
def test_every_page_of_the_book_loads_offline_with_figures_math_and_working_links(built_site, browser):
    started = time.perf_counter()
    with sitecheck.serve(built_site) as base_url:
        pages = sitecheck.site_pages(built_site)
        problems = sitecheck.check_site(browser, built_site, base_url, pages)
    print(f"checked {len(pages)} pages in {time.perf_counter() - started:.1f} s")
    assert any(p.startswith(sitecheck.PAPER_PAGES) for p in pages)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(map(str, problems))


@pytest.mark.slow
def test_the_checker_reports_a_missing_figure_and_a_broken_link(built_site, browser, tmp_path):
    site = tmp_path / "html"
    shutil.copytree(built_site, site)
    papers = sorted((site / "papers").glob("*.html"))
    html = papers[0].read_text()
    figures = re.findall(r'<img [^>]*src="\.\./(_images/[^"]+)"', html)
    # A figure shown on this page only, so deleting it breaks exactly one page.
    figure = next(f for f in figures if sum(f in p.read_text() for p in site.rglob("*.html")) == 1)
    (site / figure).unlink()
    scoreboard = site / "scoreboard.html"
    first_link = re.search(r'href="(papers/[^"#]+\.html#[^"]+)"', scoreboard.read_text()).group(1)
    scoreboard.write_text(scoreboard.read_text().replace(f'href="{first_link}"', 'href="papers/gone.html"', 1))
    # The two damaged pages and one untouched paper page: the checker must report exactly the damage.
    pages = [f"papers/{papers[0].name}", "scoreboard.html", f"papers/{papers[1].name}"]
    with sitecheck.serve(site) as base_url:
        problems = sitecheck.check_site(browser, site, base_url, pages)
    found = sorted((p.page, p.kind) for p in problems)
    assert found == sorted([(f"papers/{papers[0].name}", "figure missing"), ("scoreboard.html", "broken link")]), \
        "\n".join(map(str, problems))
    by_kind = {p.kind: p for p in problems}
    assert figure.split("/")[-1] in by_kind["figure missing"].detail and "404" in by_kind["figure missing"].detail
    assert "papers/gone.html does not exist" in by_kind["broken link"].detail
