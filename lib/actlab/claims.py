"""Claims tables: the paper's figure beside the measured one, with a verdict computed from a criterion.

Each claim is declared once, from its card, and decided once, from the
measurement; the verdict string is derived here, never typed by hand::

    claims = Claims("itda")
    claims.declare("C1", "ITDA reconstructs within 75 % of an SAE", paper="0.94 vs 0.97", where="Fig. 7a")
    ...
    claims.check("C1", measured=f"{itda:.3f} vs {sae:.3f}", criterion="ITDA >= 0.75 x SAE",
                 criterion_source="card", holds=itda >= 0.75 * sae,
                 requires={"SAE explained variance >= 0.80": sae_ev >= 0.80})
    claims.show()

How a verdict is derived (:func:`verdict_of`):

- ``holds is None``: ``not_checkable`` (the check cannot run here);
- a failed entry of ``requires`` (a precondition of the check's power, in
  words): ``inconclusive``, with the failed ones as the reason;
- ``holds`` true: ``reproduced``;
- ``partially`` true: ``partial``. ``partially`` must be a *weaker form of
  the same claim, in the same direction* (a smaller margin, fewer of the
  settings, a looser threshold); a result that goes against the claim is
  ``not_reproduced``, never ``partial``. When ``holds`` is a
  :class:`actlab.stats.Comparison` whose interval lies on the opposite
  side, ``partial`` is refused whatever ``partially`` says;
- otherwise ``not_reproduced``.

``criterion_source`` is ``"card"`` (the card's criterion as written) or
``"ours"`` (then ``reason`` says why). It has no default in a declared
claim's check.

:meth:`Claims.show` renders the table and also emits it as JSON under the
MIME type :data:`CLAIMS_MIME`, which the runner, the tests and the book's
scoreboard read back from the executed notebook.

The older one-call form, ``check(id, claim, paper=..., measured=..., criterion=..., holds=...)``
without a declaration, still works for notebooks written before the protocol;
its rows carry no criterion source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from html import escape
from typing import Any, Literal

Verdict = Literal["reproduced", "partial", "not_reproduced", "inconclusive", "not_checkable"]
VERDICTS: tuple[Verdict, ...] = ("reproduced", "partial", "not_reproduced", "inconclusive", "not_checkable")
CriterionSource = Literal["card", "ours"]
CRITERION_SOURCES: tuple[CriterionSource, ...] = ("card", "ours")
CLAIMS_MIME = "application/vnd.actlab.claims+json"
_MARKS = {"reproduced": "reproduced", "partial": "partial", "not_reproduced": "not reproduced",
          "inconclusive": "inconclusive", "not_checkable": "not checkable"}
_COLOURS = {"reproduced": "#1a7f37", "partial": "#9a6700", "not_reproduced": "#cf222e",
            "inconclusive": "#8250df", "not_checkable": "#6e7781"}
# The fields of a row of the claims JSON, in the schema's order (DESIGN.md, README "The claims JSON").
CLAIM_FIELDS = ("id", "claim", "paper", "where", "measured", "criterion", "criterion_source", "verdict", "reason")
_UNSET: Any = object()


@dataclass(frozen=True)
class Claim:
    """One row of a claims table, with the field names of the claims JSON."""

    id: str
    claim: str
    paper: str
    measured: str
    criterion: str
    verdict: Verdict
    where: str | None = None
    criterion_source: CriterionSource | None = None
    reason: str = ""


@dataclass(frozen=True)
class Declaration:
    id: str
    claim: str
    paper: str
    where: str


def _truth(value: object) -> bool | None:
    if value is None:
        return None
    return bool(value)  # numpy / torch booleans, and Comparison objects


def _is_against(value: object) -> bool:
    return bool(getattr(value, "against", False))


def verdict_of(holds: object, partially: object = None, requires: Mapping[str, object] | None = None
               ) -> Verdict:
    """The verdict of a check; see the module docstring for the rules."""
    return _decide(holds, partially, requires)[0]


def _decide(holds: object, partially: object, requires: Mapping[str, object] | None) -> tuple[Verdict, str]:
    if holds is None:
        return "not_checkable", ""
    failed = [condition for condition, ok in (requires or {}).items() if not bool(ok)]
    if failed:
        return "inconclusive", "precondition failed: " + "; ".join(failed)
    if _truth(holds):
        return "reproduced", ""
    if _is_against(holds) or _is_against(partially):
        return "not_reproduced", "the interval lies on the opposite side of the claim"
    if _truth(partially):
        return "partial", ""
    return "not_reproduced", ""


class Claims:
    """An ordered collection of claims for one notebook."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self._declared: dict[str, Declaration] = {}
        self._claims: dict[str, Claim] = {}

    def declare(self, id: str, claim: str, paper: str, where: str) -> Declaration:  # noqa: A002 - schema name
        """State a claim once, from its card: the statement, the paper's figure and where the paper gives it."""
        if id in self._declared:
            raise ValueError(f"claim {id} is declared twice")
        declaration = Declaration(id, claim, str(paper), where)
        self._declared[id] = declaration
        return declaration

    def check(
        self,
        id: str,  # noqa: A002 - the column is called id in the schema
        claim: str | None = None,
        paper: str | None = None,
        measured: object = None,
        criterion: str | None = None,
        holds: object = None,
        partially: object = None,
        *,
        criterion_source: CriterionSource | None = _UNSET,
        requires: Mapping[str, object] | None = None,
        reason: str = "",
    ) -> Claim:
        """Decide a claim from its measurement.

        ``holds`` is the criterion evaluated on the measurement (a bool, or an
        :class:`actlab.stats.Comparison`; None: not checkable). ``requires``
        maps each precondition, in words, to whether it held. For a declared
        claim, ``claim`` and ``paper`` come from :meth:`declare` and
        ``criterion_source`` must be given.
        """
        declared = self._declared.get(id)
        if declared is not None:
            if claim is not None or paper is not None:
                raise ValueError(f"claim {id} was declared; its statement and paper figure are not repeated in check")
            if criterion_source is _UNSET:
                raise TypeError(f"check({id!r}) needs criterion_source ('card' or 'ours')")
            claim, paper, where = declared.claim, declared.paper, declared.where
        else:
            if claim is None or paper is None:
                raise ValueError(f"claim {id} was not declared: declare it first, or give its claim and paper")
            where = None
            criterion_source = None if criterion_source is _UNSET else criterion_source
        if criterion_source is not None and criterion_source not in CRITERION_SOURCES:
            raise ValueError(f"criterion_source must be one of {CRITERION_SOURCES}, not {criterion_source!r}")
        if criterion_source == "ours" and not reason:
            raise ValueError(f"claim {id}: a criterion of ours needs a reason")
        if measured is None or criterion is None:
            raise TypeError(f"check({id!r}) needs measured and criterion")
        verdict, why = _decide(holds, partially, requires)
        reason = "; ".join(part for part in (reason, why) if part)
        entry = Claim(id, claim, str(paper), str(measured), criterion, verdict, where, criterion_source, reason)
        self._claims[id] = entry
        return entry

    def not_checkable(self, id: str, claim: str | None = None, paper: str | None = None,  # noqa: A002
                      why: str | None = None, *, reason: str | None = None) -> Claim:
        """Record a claim that cannot be run here, with the reason (``why`` in the older form)."""
        because = reason if reason is not None else why
        if not because:
            raise ValueError(f"claim {id}: say why it cannot be checked")
        declared = id in self._declared
        return self.check(id, claim, paper, measured=f"not measured: {because}", criterion="-", holds=None,
                          **({"criterion_source": None, "reason": because} if declared else {}))

    def verdict(self, id: str) -> Verdict:  # noqa: A002
        """The verdict a claim got (for the generated "Results in brief" text)."""
        if id not in self._claims:
            raise KeyError(f"claim {id} has not been checked yet")
        return self._claims[id].verdict

    def unchecked(self) -> list[str]:
        """Declared claims that no check has decided yet."""
        return [id_ for id_ in self._declared if id_ not in self._claims]

    @property
    def claims(self) -> list[Claim]:
        return list(self._claims.values())

    def to_dict(self) -> dict:
        """The table as the claims JSON, fields in the schema's order."""
        return {"slug": self.slug, "claims": [{key: asdict(c)[key] for key in CLAIM_FIELDS} for c in self.claims]}

    def _row(self, c: Claim) -> list[str]:
        paper = c.paper if not c.where else f"{c.paper} ({c.where})"
        criterion = c.criterion if not c.criterion_source else f"{c.criterion} [{c.criterion_source}]"
        verdict = _MARKS[c.verdict] if not c.reason else f"{_MARKS[c.verdict]}: {c.reason}"
        return [c.id, c.claim, paper, c.measured, criterion, verdict]

    def to_markdown(self) -> str:
        rows = ["| id | claim | paper | measured | criterion [source] | verdict |", "|---|---|---|---|---|---|"]
        for c in self.claims:
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in self._row(c)) + " |")
        return "\n".join(rows)

    def to_html(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("id", "claim", "paper", "measured", "criterion", "verdict"))
        body = []
        for c in self.claims:
            paper = escape(c.paper) + (f"<br><small>{escape(c.where)}</small>" if c.where else "")
            criterion = escape(c.criterion) + (f"<br><small>source: {escape(c.criterion_source)}</small>"
                                               if c.criterion_source else "")
            verdict = f'<b style="color:{_COLOURS[c.verdict]}">{escape(_MARKS[c.verdict])}</b>' + (
                f"<br><small>{escape(c.reason)}</small>" if c.reason else "")
            cells = [escape(c.id), escape(c.claim), paper, escape(c.measured), criterion, verdict]
            body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        return f'<table class="actlab-claims"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'

    def in_brief(self) -> str:
        """The "Results in brief" list as Markdown: one line per claim with its verdict and measured figure.

        Generated from the table, so a notebook's discussion cannot contradict its own run. A reason
        already contained in the measured text is not repeated.
        """
        lines = []
        for c in self.claims:
            reason = f" *{c.reason}.*" if c.reason and c.reason not in c.measured else ""
            lines.append(f"- **{c.id}** {c.claim}: **{_MARKS[c.verdict]}**. {c.measured}.{reason}")
        return "\n".join(lines)

    def summary(self) -> str:
        counts = {v: sum(c.verdict == v for c in self.claims) for v in VERDICTS}
        return ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items() if n)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:  # noqa: ANN001
        return {
            "text/plain": self.to_markdown(),
            "text/markdown": self.to_markdown(),
            "text/html": self.to_html(),
            # Stored as a JSON string: notebook tools that diff outputs (nbval) expect text.
            CLAIMS_MIME: json.dumps(self.to_dict()),
        }

    def show(self) -> None:
        """Display the table in a notebook (with its machine-readable copy); every declared claim must be decided."""
        from IPython.display import display

        missing = self.unchecked()
        if missing:
            raise ValueError(f"declared but never checked: {', '.join(missing)}")

        display(self)


def claims_from_notebook(notebook: dict) -> dict | None:
    """The last claims table displayed in an executed notebook (a parsed .ipynb), or None."""
    found = None
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            if CLAIMS_MIME in data:
                payload = data[CLAIMS_MIME]
                found = json.loads(payload) if isinstance(payload, str) else payload
    return found
