"""The claims ledger: every claim a chapter checks, declared once as data, measured in one line.

A chapter declares its claims in one place::

    claims = run.claims([
        Claim("F2", "descent+ascent moves θ by −(ε²/2)∇‖∇L‖²: relative error at ε = 1e-3",
              "post, main derivation", kind="identity", bounds=at_most(2e-3)),
        Claim("F7", "flooding beats plain training run to the end (points)", "paper §4.1",
              kind="measurement", bounds=at_least(2.0), null="b = 0, trained to the end"),
    ])

and each cell records what it measured::

    claims.measure("F2", rel_err)
    claims.measure("F7", gain, null=gain_of_the_null)

The target text the reader sees is generated from the bounds, so text and condition cannot disagree. A
compound claim has one bound per component (``bounds={"ratio": at_least(2), "error": at_most(0.1)}``) and
is measured with a dict of the same keys. Kinds:

- ``identity``: a derivation or an implementation checked numerically; the tolerance comes from float
  precision or from the truncation order. No null: a unit test shows that a plausible wrong version fails.
- ``measurement``: an experiment's outcome. A hard measurement carries the value of its *null control*
  (the trivial baseline the statement must beat), computed in the same run; the same bounds are evaluated on
  it, and if the null meets them too the claim is *vacuous* and counts as failing.
- ``timing``: run-to-run values; never hard, masked by nbval's sanitizer.

A claim may belong to some profiles only (``profiles=("full",)``): the others neither measure nor list it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS: tuple[str, ...] = ("identity", "measurement", "timing")


class ClaimsFailed(AssertionError):
    """Raised at the end of a chapter when a hard claim does not hold (or was declared and never measured)."""


class ClaimDeclarationError(ValueError):
    """A claim declared or measured inconsistently (unknown id, missing null, wrong components...)."""


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


# -- bounds -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bounds:
    """low ≤ value ≤ high (either side may be open). ``text`` overrides the generated wording only for the
    forms below that say the same condition differently (``close_to``: "1 ± 3 %")."""

    low: float | None = None
    high: float | None = None
    text: str = ""

    def __post_init__(self):
        if self.low is None and self.high is None:
            raise ClaimDeclarationError("a bound needs low or high")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ClaimDeclarationError(f"empty bound: low {self.low} > high {self.high}")

    def holds(self, value: Any) -> bool:
        """NaN, None, infinities beyond a finite bound and non-numbers never hold."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
        if math.isnan(value):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.text:
            return self.text
        if self.low is not None and self.high is not None:
            if self.low == self.high:
                return f"= {format_value(self.low)}"
            return f"in [{format_value(self.low)}, {format_value(self.high)}]"
        if self.low is not None:
            return f"≥ {format_value(self.low)}"
        return f"≤ {format_value(self.high)}"


def at_most(high: float) -> Bounds:
    return Bounds(high=float(high))


def at_least(low: float) -> Bounds:
    return Bounds(low=float(low))


def between(low: float, high: float) -> Bounds:
    return Bounds(low=float(low), high=float(high))


def equal_to(value: float) -> Bounds:
    return Bounds(low=float(value), high=float(value))


def close_to(expected: float, *, rel: float | None = None, abs: float | None = None) -> Bounds:
    """|value − expected| ≤ abs, or ≤ rel·|expected|."""
    if (rel is None) == (abs is None):
        raise ClaimDeclarationError("close_to needs exactly one of rel and abs")
    tol = abs if abs is not None else rel * math.fabs(expected)
    how = f"± {format_value(abs)}" if abs is not None else f"± {format_value(100 * rel)} %"
    return Bounds(low=expected - tol, high=expected + tol, text=f"{format_value(expected)} {how}")


# -- declarations ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """One claim as declared: what it says, where it comes from, its kind and its bounds."""

    id: str
    statement: str
    source: str
    kind: str
    bounds: Bounds | Mapping[str, Bounds]
    hard: bool = True
    reported: str = ""
    null: str = ""                 # what the null control is (required for a hard measurement)
    profiles: tuple[str, ...] = ("quick", "full")

    def __post_init__(self):
        where = f"claim {self.id!r}"
        if self.kind not in KINDS:
            raise ClaimDeclarationError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "timing" and self.hard:
            raise ClaimDeclarationError(f"{where}: a timing varies from run to run; declare it hard=False")
        if self.kind == "measurement" and self.hard and not self.null:
            raise ClaimDeclarationError(f"{where}: a hard measurement needs a null control: say what it is "
                                        f"with null='...' (e.g. 'untrained model'), or declare it hard=False")
        if self.kind == "identity" and self.null:
            raise ClaimDeclarationError(f"{where}: identities carry no null; their unit test shows a wrong "
                                        f"implementation failing instead")
        if isinstance(self.bounds, Mapping):
            if not self.bounds or not all(isinstance(b, Bounds) for b in self.bounds.values()):
                raise ClaimDeclarationError(f"{where}: bounds must be a Bounds or a dict of Bounds")
        elif not isinstance(self.bounds, Bounds):
            raise ClaimDeclarationError(f"{where}: bounds must be a Bounds (at_most, at_least, between, ...)")

    @property
    def compound(self) -> bool:
        return isinstance(self.bounds, Mapping)

    def target(self) -> str:
        """The condition in words, generated from the bounds."""
        if self.compound:
            return "; ".join(f"{name} {b.describe()}" for name, b in self.bounds.items())
        return self.bounds.describe()

    def evaluate(self, value: Any) -> bool:
        """Whether ``value`` (a number, or a dict with one entry per component) meets every bound."""
        if self.compound:
            if not isinstance(value, Mapping):
                return False
            return all(name in value and b.holds(value[name]) for name, b in self.bounds.items())
        return self.bounds.holds(value)

    def check_shape(self, value: Any, what: str) -> None:
        if self.compound:
            if not isinstance(value, Mapping):
                raise ClaimDeclarationError(f"claim {self.id!r} is compound: the {what} must be a dict with "
                                            f"keys {list(self.bounds)}")
            missing = [k for k in self.bounds if k not in value]
            if missing:
                raise ClaimDeclarationError(f"claim {self.id!r}: the {what} lacks component(s) {missing}")


# -- measured rows -----------------------------------------------------------------------------------------
@dataclass
class Result:
    """A declared claim with what this run measured."""

    claim: Claim
    value: Any
    null_value: Any = None
    detail: Mapping[str, Any] = field(default_factory=dict)   # extra context shown in the record

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def hard(self) -> bool:
        return self.claim.hard

    @property
    def has_null(self) -> bool:
        return bool(self.claim.null) and self.claim.kind == "measurement"

    @property
    def value_holds(self) -> bool:
        return self.claim.evaluate(self.value)

    @property
    def null_holds(self) -> bool:
        return self.has_null and self.claim.evaluate(self.null_value)

    @property
    def vacuous(self) -> bool:
        """The null control meets the bounds too: the claim says nothing."""
        return self.null_holds

    @property
    def holds(self) -> bool:
        return self.value_holds and not self.vacuous

    def shown_value(self) -> str:
        return format_value(self.value) + (" (timing)" if self.claim.kind == "timing" else "")

    def shown_null(self) -> str:
        if not self.has_null:
            return "—"
        return f"{self.claim.null}: {format_value(self.null_value)}" + (" (meets the target)"
                                                                         if self.null_holds else "")

    def verdict(self) -> str:
        if self.holds:
            return "holds"
        if self.vacuous and self.value_holds:
            return "VACUOUS (its null meets the target too)" if self.hard else "vacuous (soft)"
        return "FAILS" if self.hard else "does not hold (soft)"

    def __repr__(self) -> str:
        """One line, shown under the cell that measured the claim."""
        line = (f"{'✓' if self.holds else '✗'} {self.id} {self.verdict()}: measured {self.shown_value()}, "
                f"target {self.claim.target()}")
        if self.has_null:
            line += f"; null ({self.claim.null}) {format_value(self.null_value)}"
        return line

    def as_record(self) -> dict[str, Any]:
        c = self.claim
        row: dict[str, Any] = {
            "id": c.id, "statement": c.statement, "source": c.source, "kind": c.kind,
            "value": _plain(self.value), "target": c.target(), "reported": c.reported,
            "holds": bool(self.holds), "hard": c.hard, "volatile": c.kind == "timing",
        }
        if self.has_null:
            row["null"] = {"label": c.null, "value": _plain(self.null_value), "holds": bool(self.null_holds)}
        if self.detail:
            row["detail"] = _plain(dict(self.detail))
        return row


class ClaimsLedger:
    """The claims of one chapter: declared up front, measured in any order, shown as a table at the end.

    ``sweep`` (a seed-sweep summary, see :mod:`kitlib.seeds`) adds a "seeds" column: how many of the
    committed sweep's seeds each claim held on."""

    def __init__(self, chapter: str, claims: Sequence[Claim], *, profile: str = "quick", echo: bool = True,
                 sweep: Mapping[str, Any] | None = None):
        ids = [c.id for c in claims]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ClaimDeclarationError(f"{chapter}: claim id(s) declared twice: {duplicated}")
        self.chapter = chapter
        self.profile = profile
        self.declared: dict[str, Claim] = {c.id: c for c in claims if profile in c.profiles}
        self.results: dict[str, Result] = {}
        self.echo = echo
        self.sweep = sweep

    # -- measuring ----------------------------------------------------------------------------------
    def measure(self, id: str, value: Any, *, null: Any = None, **detail: Any) -> None:
        """Record the measured ``value`` of a declared claim (and its null's value); print the verdict.

        Measuring an id again replaces its row. ``detail`` keeps extra numbers in the record. Returns None,
        so that a cell ending with it shows the verdict once (the row is ``self.results[id]``)."""
        if id not in self.declared:
            raise ClaimDeclarationError(f"{self.chapter}: claim {id!r} is not declared for profile "
                                        f"{self.profile!r}; declared: {', '.join(self.declared) or 'none'}")
        claim = self.declared[id]
        claim.check_shape(value, "value")
        if claim.kind == "measurement" and claim.null:
            if null is None:
                raise ClaimDeclarationError(f"claim {id!r} declares the null control {claim.null!r}: pass its "
                                            f"value, measure({id!r}, value, null=...)")
            claim.check_shape(null, "null value")
        elif null is not None:
            raise ClaimDeclarationError(f"claim {id!r} declares no null control, yet a null value was passed")
        result = Result(claim, _plain(value), _plain(null), detail)
        self.results[id] = result
        if self.echo:
            print(repr(result))

    # -- reading ------------------------------------------------------------------------------------
    @property
    def rows(self) -> list[Result]:
        """Measured claims in declaration order."""
        return [self.results[i] for i in self.declared if i in self.results]

    def unmeasured(self) -> list[str]:
        return [i for i in self.declared if i not in self.results]

    def failed(self, hard_only: bool = True) -> list[Result]:
        return [r for r in self.rows if not r.holds and (r.hard or not hard_only)]

    def summary(self) -> str:
        rows = self.rows
        return f"{sum(r.holds for r in rows)}/{len(rows)} claims hold"

    def raise_if_failed(self) -> None:
        problems = []
        failed = self.failed()
        if failed:
            problems.append(f"hard claim(s) {', '.join(r.id for r in failed)} do not hold")
        missing = self.unmeasured()
        if missing:
            problems.append(f"claim(s) {', '.join(missing)} declared for profile {self.profile!r} but never "
                            f"measured")
        if problems:
            raise ClaimsFailed(f"{self.chapter}: " + "; ".join(problems) + "; see the claims table above")

    def records(self) -> list[dict[str, Any]]:
        return [r.as_record() for r in self.rows]

    # -- display ------------------------------------------------------------------------------------
    def _seeds_cell(self, id: str) -> str:
        if not self.sweep:
            return "—"
        entry = self.sweep.get("claims", {}).get(id)
        return f"{entry['held']}/{entry['of']}" if entry else "—"

    def table_rows(self) -> list[tuple[str, ...]]:
        return [("✓" if r.holds else "✗", r.id, r.claim.statement, r.claim.source, r.claim.kind,
                 "hard" if r.hard else "soft", r.shown_value(), r.claim.target(), r.shown_null(),
                 self._seeds_cell(r.id), r.claim.reported or "—") for r in self.rows]

    COLUMNS = ("", "id", "claim", "source", "kind", "hard/soft", "measured", "target", "null control", "seeds held",
               "reported")

    def _sweep_line(self) -> str:
        if not self.sweep:
            return "No seed sweep of this chapter is committed yet."
        seeds = self.sweep.get("seeds", [])
        return (f"Seeds held: from the committed sweep results/seeds/{self.chapter}.json "
                f"({self.sweep.get('profile')} profile, seeds {seeds[0]}–{seeds[-1]})." if seeds else "")

    def __repr__(self) -> str:
        lines = [f"{self.chapter}: {self.summary()}"]
        lines += [" | ".join(r) for r in self.table_rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                       for row in self.table_rows())
        return (f"<p><b>{html.escape(self.summary())}</b>. {html.escape(self._sweep_line())}</p>"
                f"<table class='kitlib-claims'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
