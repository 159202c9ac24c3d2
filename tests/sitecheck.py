"""Check a built static site in a real browser, page by page, and list what is wrong with it.

The checker serves nothing and builds nothing: give it a Playwright browser, the
folder of the site and the address it is served at (:func:`serve` starts a quiet
local server). For every HTML page it reports, as human-readable
:class:`Problem` entries:

- requests that failed or answered HTTP >= 400, requests to any host other than
  127.0.0.1 (they are blocked, so an offline site stays offline), console errors
  and uncaught script errors;
- math that MathJax left untypeset, and raw ``$...$`` / ``\\(...\\)`` left in prose;
- internal links to pages that do not exist, or to ids that the target page lacks;
- on paper pages (``papers/*.html``): figures that did not load, no figure at all,
  no claims table.
"""

from __future__ import annotations

import functools
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

from actlab.book import html_ids

LOCAL_HOST = "127.0.0.1"
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic")
INSTALL_HINT = ("the browser test needs Chromium and Playwright for Python: install them with "
                "`apt-get install chromium` (Debian/Ubuntu; the binary must be on PATH as `chromium`) and "
                "`pip install playwright`")
# The pydata theme logs this when no colour mode was stored yet; it then falls back to "auto".
ALLOWED_CONSOLE_ERRORS = ("invalid theme mode",)
PAPER_PAGES = "papers/"
NAVIGATION_TIMEOUT_MS = 30_000
MATH_TIMEOUT_MS = 15_000
# After the load event MathJax still fetches its fonts; waiting for a quiet network catches their failures.
NETWORK_IDLE_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one page: ``kind`` names the check, ``detail`` says what failed."""

    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without logging every request to the terminal."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class names it so
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 at a free port in a background thread; yield the base URL."""
    server = ThreadingHTTPServer((LOCAL_HOST, 0), functools.partial(_QuietHandler, directory=str(directory)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://{LOCAL_HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def chromium_path() -> str | None:
    """The ``chromium`` executable on PATH, or None."""
    return shutil.which("chromium")


def launch_chromium(playwright):  # noqa: ANN001, ANN201 - Playwright's types are optional at import time
    """A headless Chromium with background networking off; ``RuntimeError`` with install hints when absent."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError(f"chromium not found on PATH; {INSTALL_HINT}")
    return playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))


# Folders of a Sphinx build that hold assets and theme templates, not pages a reader opens.
_ASSET_DIRS = ("_static", "_sources", "_images", "_downloads")
_META_REFRESH = re.compile(r"""<meta\s+http-equiv=["']?refresh["']?\s+content=["']?\d+;\s*url=([^"'>\s]+)""", re.I)


def site_pages(site_dir: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to its root (asset folders left out)."""
    pages = (p.relative_to(site_dir).as_posix() for p in site_dir.rglob("*.html"))
    return sorted(name for name in pages if name.split("/", 1)[0] not in _ASSET_DIRS)


def redirect_target(page_file: Path) -> str | None:
    """The address a meta-refresh page (such as the book's index.html) sends the reader to, else None."""
    head = page_file.read_text(encoding="utf-8", errors="replace")[:2000]
    match = _META_REFRESH.search(head)
    return match.group(1) if match else None


# Collected in the page in one round trip: figures, claims table, math, prose text, links and ids.
_PAGE_FACTS_JS = r"""
() => {
  const article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
  const images = [...article.querySelectorAll("img")].map((img) => ({
    src: img.getAttribute("src"), url: img.currentSrc || img.src, loaded: img.complete && img.naturalWidth > 0,
  }));
  const mathNodes = [...document.querySelectorAll("span.math, div.math")];
  const untypeset = mathNodes.filter((node) => !node.querySelector("mjx-container"));
  // Prose only: code, outputs and MathJax's own markup may hold dollars and backslashes legitimately.
  const skip = "pre, code, kbd, samp, script, style, textarea, mjx-container, .highlight, .cell_output, .output";
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const prose = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.parentElement.closest(skip)) prose.push(node.textContent);
  }
  return {
    images,
    hasClaimsTable: document.querySelector("table.actlab-claims") !== null,
    mathCount: mathNodes.length,
    untypeset: untypeset.slice(0, 3).map((node) => node.textContent.trim().slice(0, 60)),
    untypesetCount: untypeset.length,
    prose: prose.join(" "),
    links: [...document.querySelectorAll("a[href]")].map((a) => ({href: a.getAttribute("href"), url: a.href})),
    ids: [...document.querySelectorAll("[id]")].map((el) => el.id),
  };
}
"""

_WAIT_FOR_MATH_JS = """
async (timeoutMs) => {
  if (!document.querySelector("span.math, div.math")) return true;
  const deadline = performance.now() + timeoutMs;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  while (!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)) {
    if (performance.now() > deadline) return false;
    await sleep(50);
  }
  return await Promise.race([window.MathJax.startup.promise.then(() => true),
                             sleep(Math.max(0, deadline - performance.now())).then(() => false)]);
}
"""

# TeX left as text: \( \) \[ \] delimiters, environments, or $...$ around something TeX-like.
_RAW_MATH = re.compile(r"\\\(|\\\)|\\\[|\\\]|\\begin\{|(?<![\\$])\$(?!\s)[^$\n]{0,200}?[\\^_{}][^$\n]{0,200}?\$")


def _page_of(url: str, base_url: str) -> str | None:
    """The site-relative path a URL of this site points to (``dir/`` -> ``dir/index.html``), else None."""
    if not url.startswith(base_url):
        return None
    path = unquote(urlsplit(url).path)[len(urlsplit(base_url).path):]
    return path + "index.html" if path == "" or path.endswith("/") else path


class _PageVisit:
    """Listens to one browser page while it loads and records the problems its events show."""

    def __init__(self, name: str, external: list[str]) -> None:
        self.name = name
        self.external = external
        self.failed: dict[str, str] = {}
        self.problems: list[Problem] = []

    def on_request_failed(self, request) -> None:  # noqa: ANN001
        if request.url not in self.external:
            self.failed.setdefault(request.url, f"request failed ({request.failure})")

    def on_response(self, response) -> None:  # noqa: ANN001
        if response.status >= 400:
            self.failed.setdefault(response.url, f"HTTP {response.status}")

    def on_console(self, message) -> None:  # noqa: ANN001
        if message.type != "error" or any(allowed in message.text for allowed in ALLOWED_CONSOLE_ERRORS):
            return
        # Chromium repeats every failed load as a console error; the failure itself is reported already.
        if message.text.startswith("Failed to load resource") and (
                message.location.get("url") in self.failed or message.location.get("url") in self.external):
            return
        self.problems.append(Problem(self.name, "console error", message.text))

    def on_page_error(self, error) -> None:  # noqa: ANN001
        self.problems.append(Problem(self.name, "script error", str(error)))


def _check_links(name: str, facts: dict, site_dir: Path, base_url: str, id_cache: dict[str, set[str]]) -> \
        list[Problem]:
    problems = []
    own_ids = set(facts["ids"])
    seen: set[str] = set()
    for link in facts["links"]:
        url, fragment = urldefrag(link["url"])
        target = _page_of(url, base_url)
        if target is None or link["url"] in seen:
            continue  # another site (its reachability is not this site's business), or checked already
        seen.add(link["url"])
        fragment = unquote(fragment)
        if target == name:
            if fragment and fragment not in own_ids:
                problems.append(Problem(name, "broken link", f"{link['href']}: no element with id '{fragment}'"))
            continue
        file = site_dir / target
        if not file.is_file():
            problems.append(Problem(name, "broken link", f"{link['href']}: {target} does not exist"))
        elif fragment and target.endswith(".html"):
            if target not in id_cache:
                id_cache[target] = html_ids(file)
            if fragment not in id_cache[target]:
                problems.append(Problem(name, "broken link", f"{link['href']}: {target} has no id '{fragment}'"))
    return problems


def _check_content(name: str, facts: dict, visit: _PageVisit) -> list[Problem]:
    problems = []
    if facts["untypesetCount"]:
        problems.append(Problem(name, "math not typeset", f"{facts['untypesetCount']} of {facts['mathCount']} "
                                f"math elements have no MathJax output, e.g. {facts['untypeset']}"))
    raw = _RAW_MATH.search(facts["prose"])
    if raw:
        start = max(raw.start() - 30, 0)
        problems.append(Problem(name, "raw math in prose", repr(facts["prose"][start:raw.end() + 30])))
    if name.startswith(PAPER_PAGES):
        loaded = [image for image in facts["images"] if image["loaded"]]
        for image in facts["images"]:
            if not image["loaded"]:
                why = visit.failed.pop(image["url"], "did not load")
                problems.append(Problem(name, "figure missing", f"{image['src']} ({why})"))
        if not loaded:
            problems.append(Problem(name, "no figures", "the page shows no loaded image"))
        if not facts["hasClaimsTable"]:
            problems.append(Problem(name, "no claims table", "no table.actlab-claims on the page"))
    return problems


def check_site(browser, site_dir: Path, base_url: str, pages: list[str] | None = None) -> list[Problem]:  # noqa: ANN001
    """Load every page (or ``pages``) of the site served at ``base_url`` from ``site_dir``; list its problems."""
    site_dir = Path(site_dir)
    pages = site_pages(site_dir) if pages is None else pages
    problems: list[Problem] = []
    id_cache: dict[str, set[str]] = {}
    context = browser.new_context(viewport={"width": 1400, "height": 900}, service_workers="block")
    external: list[str] = []

    def keep_local(route) -> None:  # noqa: ANN001
        host = urlsplit(route.request.url).hostname
        if host in (LOCAL_HOST, None):  # None: data: and blob: URLs, which never touch the network
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", keep_local)
    try:
        for name in pages:
            target = redirect_target(site_dir / name)
            if target is not None:
                # A redirect page unloads itself at once; check where it points instead of driving it.
                resolved = (site_dir / name).parent / urlsplit(target).path
                if urlsplit(target).scheme or not resolved.is_file():
                    problems.append(Problem(name, "broken redirect", target))
                continue
            external.clear()
            visit = _PageVisit(name, external)
            page = context.new_page()
            page.on("requestfailed", visit.on_request_failed)
            page.on("response", visit.on_response)
            page.on("console", visit.on_console)
            page.on("pageerror", visit.on_page_error)
            try:
                response = page.goto(base_url + name, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
                if response is None or response.status >= 400:
                    visit.failed.setdefault(base_url + name, f"HTTP {response.status if response else 'no answer'}")
                if not page.evaluate(_WAIT_FOR_MATH_JS, MATH_TIMEOUT_MS):
                    visit.problems.append(Problem(name, "math not typeset", "MathJax did not finish in time"))
                try:
                    page.wait_for_load_state("networkidle", timeout=NETWORK_IDLE_TIMEOUT_MS)
                except Exception:  # noqa: BLE001 - a page that keeps polling is not a failure by itself
                    pass
                facts = page.evaluate(_PAGE_FACTS_JS)
            except Exception as exc:  # noqa: BLE001 - one page's failure must not hide the others'
                problems.append(Problem(name, "page did not load", str(exc).splitlines()[0]))
                page.close()
                continue
            page.close()
            content = _check_content(name, facts, visit)
            problems += visit.problems + content
            problems += [Problem(name, "failed request", f"{url} ({why})") for url, why in visit.failed.items()]
            problems += [Problem(name, "external request", url) for url in dict.fromkeys(external)]
            problems += _check_links(name, facts, site_dir, base_url, id_cache)
    finally:
        context.close()
    return problems
