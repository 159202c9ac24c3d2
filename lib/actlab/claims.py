"""Claims tables: the paper's figure beside the measured one, with a verdict computed from a criterion.

A notebook records each claim with the boolean outcome of its criterion; the
verdict string is derived here, never typed by hand::

    claims = Claims("itda")
    claims.check("C1", "ITDA is within 75% of the SAE", paper="0.94 vs 0.97",
                 measured=f"{itda_score:.3f} vs {sae_score:.3f}", criterion="ITDA >= 0.75 x SAE",
                 holds=itda_score >= 0.75 * sae_score)
    claims.show()

:meth:`Claims.show` renders the table and also emits it as JSON under the
MIME type :data:`CLAIMS_MIME`, which the runner, the tests and the book's
scoreboard read back from the executed notebook.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from html import escape
from typing import Literal

Verdict = Literal["reproduced", "partial", "not_reproduced", "inconclusive", "not_checkable"]
VERDICTS: tuple[Verdict, ...] = ("reproduced", "partial", "not_reproduced", "inconclusive", "not_checkable")
CLAIMS_MIME = "application/vnd.actlab.claims+json"
_MARKS = {"reproduced": "reproduced", "partial": "partial", "not_reproduced": "not reproduced",
          "inconclusive": "inconclusive", "not_checkable": "not checkable"}
_COLOURS = {"reproduced": "#1a7f37", "partial": "#9a6700", "not_reproduced": "#cf222e",
            "inconclusive": "#8250df", "not_checkable": "#6e7781"}


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    paper: str
    measured: str
    criterion: str
    verdict: Verdict


def verdict_of(holds: bool | None, partially: bool | None = None) -> Verdict:
    """``not_checkable`` when the criterion could not be evaluated (``holds is None``)."""
    if holds is None:
        return "not_checkable"
    if bool(holds):
        return "reproduced"
    if partially:
        return "partial"
    return "not_reproduced"


class Claims:
    """An ordered collection of claims for one notebook."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self._claims: dict[str, Claim] = {}

    def check(
        self,
        id: str,  # noqa: A002 - the column is called id in the schema
        claim: str,
        paper: str,
        measured: str,
        criterion: str,
        holds: bool | None,
        partially: bool | None = None,
    ) -> Claim:
        """Record a claim; ``holds`` is the criterion evaluated on the measurement (None: not checkable)."""
        if holds is not None and not isinstance(holds, bool):
            holds = bool(holds)  # numpy / torch booleans
        entry = Claim(id, claim, str(paper), str(measured), criterion, verdict_of(holds, partially))
        self._claims[id] = entry
        return entry

    def not_checkable(self, id: str, claim: str, paper: str, why: str) -> Claim:  # noqa: A002
        """Record a claim that cannot be checked here, with the reason in the measured column."""
        return self.check(id, claim, paper, measured=f"not measured: {why}", criterion="-", holds=None)

    @property
    def claims(self) -> list[Claim]:
        return list(self._claims.values())

    def to_dict(self) -> dict:
        return {"slug": self.slug, "claims": [asdict(c) for c in self.claims]}

    def to_markdown(self) -> str:
        rows = ["| id | claim | paper | measured | criterion | verdict |", "|---|---|---|---|---|---|"]
        for c in self.claims:
            cells = [c.id, c.claim, c.paper, c.measured, c.criterion, _MARKS[c.verdict]]
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(rows)

    def to_html(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("id", "claim", "paper", "measured", "criterion", "verdict"))
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in (c.id, c.claim, c.paper, c.measured, c.criterion))
            + f'<td><b style="color:{_COLOURS[c.verdict]}">{escape(_MARKS[c.verdict])}</b></td></tr>'
            for c in self.claims
        )
        return f'<table class="actlab-claims"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

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
        """Display the table in a notebook (with its machine-readable copy)."""
        from IPython.display import display

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
