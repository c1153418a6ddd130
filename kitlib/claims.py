"""The claims ledger: every claim a chapter checks, as a row that can fail.

A row holds: id, statement, source (post or paper, with equation/table/figure), measured value, target
(a readable description of the condition, e.g. "< 2e-3" or "in [8, 12]"), what the post or paper reported
(``reported``, optional), hard or soft, and whether it holds. Soft claims are reported, never enforced.
The ledger renders as a table in the notebook; :meth:`ClaimsLedger.raise_if_failed` names the failed hard ids.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass
from typing import Any


class ClaimsFailed(AssertionError):
    """Raised at the end of a chapter when a hard claim does not hold."""


def format_value(value: Any) -> str:
    """Numbers to 4 significant digits (stable across platforms for nbval), other values as str."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "; ".join(f"{k} = {format_value(v)}" for k, v in value.items())
    return str(value)


def _plain(value: Any) -> Any:
    """JSON-friendly value: tensors and numpy scalars become python numbers."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return value


@dataclass
class Claim:
    id: str
    statement: str
    source: str
    value: Any
    target: str
    holds: bool
    hard: bool = True
    reported: str = ""
    volatile: bool = False   # a timing or other run-to-run value: shown, but masked by nbval's sanitizer

    def shown_value(self) -> str:
        return format_value(self.value) + (" (timing)" if self.volatile else "")

    def __repr__(self) -> str:
        """One line, shown under the cell that checked the claim."""
        verdict = "holds" if self.holds else ("FAILS" if self.hard else "does not hold (soft)")
        return f"{'✓' if self.holds else '✗'} {self.id} {verdict}: measured {self.shown_value()}, target {self.target}"

    def as_record(self) -> dict[str, Any]:
        row = asdict(self)
        row["value"] = _plain(self.value)
        row["holds"] = bool(self.holds)
        return row


class ClaimsLedger:
    """The claims of one chapter, in the order they were checked. Re-checking an id replaces its row."""

    def __init__(self, chapter: str, echo: bool = True):
        self.chapter = chapter
        self.claims: list[Claim] = []
        self.echo = echo  # print each verdict under the cell that checked it

    # -- adding claims -------------------------------------------------------------------------
    def check(self, id: str, statement: str, source: str, value: Any, holds: bool, target: str, *,
              hard: bool = True, reported: str = "", volatile: bool = False) -> None:
        """A claim whose condition the chapter evaluated itself; ``target`` says it in words.
        Prints the one-line verdict (``echo``); the row is in ``self.claims``. ``volatile`` marks values that
        differ from run to run (timings): tests compare everything else of the table."""
        claim = Claim(id, statement, source, _plain(value), target, bool(holds), hard, reported, volatile)
        self.claims = [c for c in self.claims if c.id != id] + [claim]
        if self.echo:
            print(repr(claim))

    def check_range(self, id: str, statement: str, source: str, value: float, *, low: float | None = None,
                    high: float | None = None, hard: bool = True, reported: str = "",
                    volatile: bool = False) -> None:
        """Holds when low ≤ value ≤ high (either bound may be omitted). NaN never holds."""
        value = float(value)
        holds = not math.isnan(value) and (low is None or value >= low) and (high is None or value <= high)
        if low is not None and high is not None:
            target = f"in [{format_value(low)}, {format_value(high)}]"
        elif low is not None:
            target = f"≥ {format_value(low)}"
        elif high is not None:
            target = f"≤ {format_value(high)}"
        else:
            raise ValueError("check_range needs low or high")
        self.check(id, statement, source, value, holds, target, hard=hard, reported=reported, volatile=volatile)

    def check_close(self, id: str, statement: str, source: str, value: float, expected: float, *,
                    rel_tol: float | None = None, abs_tol: float | None = None, hard: bool = True,
                    reported: str = "") -> None:
        """Holds when |value − expected| ≤ abs_tol, or ≤ rel_tol·|expected|."""
        if rel_tol is None and abs_tol is None:
            raise ValueError("check_close needs rel_tol or abs_tol")
        value, expected = float(value), float(expected)
        tol = abs_tol if abs_tol is not None else rel_tol * abs(expected)
        holds = abs(value - expected) <= tol
        how = f"± {format_value(abs_tol)}" if abs_tol is not None else f"± {format_value(100 * rel_tol)} %"
        self.check(id, statement, source, value, holds, f"{format_value(expected)} {how}",
                   hard=hard, reported=reported)

    # -- reading the ledger -------------------------------------------------------------------
    def failed(self, hard_only: bool = True) -> list[Claim]:
        return [c for c in self.claims if not c.holds and (c.hard or not hard_only)]

    def summary(self) -> str:
        held = sum(c.holds for c in self.claims)
        return f"{held}/{len(self.claims)} claims hold"

    def raise_if_failed(self) -> None:
        failed = self.failed()
        if failed:
            ids = ", ".join(c.id for c in failed)
            raise ClaimsFailed(f"{self.chapter}: hard claim(s) {ids} do not hold; see the claims table above")

    # -- display ------------------------------------------------------------------------------
    COLUMNS = ("", "id", "claim", "source", "measured", "target", "reported", "kind")

    def rows(self) -> list[tuple[str, ...]]:
        return [("✓" if c.holds else "✗", c.id, c.statement, c.source, c.shown_value(), c.target,
                 c.reported or "—", "hard" if c.hard else "soft") for c in self.claims]

    def __repr__(self) -> str:
        lines = [f"{self.chapter}: {self.summary()}"]
        lines += [" | ".join(r) for r in self.rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                       for row in self.rows())
        return (f"<p><b>{html.escape(self.summary())}</b></p>"
                f"<table class='kitlib-claims'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
