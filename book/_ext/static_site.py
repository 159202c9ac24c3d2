"""Sphinx extension that keeps every page of the book self-contained.

Jupyter Book always loads sphinx-thebe, even with live kernels switched off, and the configuration
script it adds is registered once per read of the sources: pages then declare the same ``const``
twice and the browser reports a script error. The book never starts a live kernel, so the thebe
scripts (which point at a CDN) are dropped, and any script registered twice is kept once.
"""

from __future__ import annotations

from typing import Any


def _script_key(script: Any) -> tuple[str, str]:
    filename = str(getattr(script, "filename", script) or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return filename, body


def _is_thebe(script: Any) -> bool:
    filename, body = _script_key(script)
    return "thebe" in filename or "THEBE_JS_URL" in body


def keep_scripts_once(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, str]] = set()
    kept = []
    for script in scripts:
        key = _script_key(script)
        if _is_thebe(script) or key in seen:
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    # After the theme and the other extensions have filled the page context.
    app.connect("html-page-context", keep_scripts_once, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
