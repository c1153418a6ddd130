"""Sphinx directives that put run records into the book at render time (registered in ``_config.yml``).

- ``{scorecard}``: one row per written chapter — claims held / total, profile, device, wall time, date —
  from the quick records in ``book/`` and the full-profile records committed under ``results/``.
- ``{claims-comparison} SLUG``: the chapter's claims with the quick run's values beside the full (GPU) run's,
  when ``results/`` holds a full-profile record of that chapter.
- ``{claims-index}``: every claim of every chapter in one table (chapter, id, statement, kind, hard/soft,
  measured, null, seeds held), from the records in ``book/`` and the sweeps in ``results/seeds/``.
- ``{exercises-index}``: every exercise of every chapter (what it asks, minutes, what it builds on), with the
  verdict its check printed in the executed notebook in ``book/`` and the chapter's quick wall time.

Reading the records at render time means the pages can never disagree with the runs they describe.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from .chapters import written_chapters
from .claims import format_value
from .record import claims_held, find_records, hard_failures
from .seeds import load_sweep


def _records(srcdir: Path) -> tuple[dict, dict]:
    """(quick-or-latest records from book/, full-profile records from results/), each keyed by chapter."""
    book = {r["chapter"]: r for r in find_records(srcdir / "book")}
    full: dict = {}
    for r in find_records(srcdir / "results"):
        if r["profile"] == "full" and not r["smoke"]:
            if r["chapter"] not in full or r["started"] > full[r["chapter"]]["started"]:
                full[r["chapter"]] = r
    return book, full


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _summary(record: dict | None) -> str:
    """'✓ 8/9 claims (1 soft not holding) · CPU · 22 s · seed 0 · 2026-11-22', or '—' without a record.
    ✓ means every hard claim held."""
    if record is None:
        return "—"
    held, total = claims_held(record)
    mark = "✗" if hard_failures(record) else "✓"          # ✓: every hard claim holds
    soft_misses = sum(not c["holds"] and not c["hard"] for c in record["claims"])
    soft = f" ({soft_misses} soft not holding)" if soft_misses else ""
    profile = "" if record["profile"] == "quick" else f" ({record['profile']})"
    return (f"{mark} {held}/{total} claims{soft}{profile} · {_cell(record['device_name'])} · "
            f"{record['wall_s']:.0f} s · seed {record['seed']} · {record['started'][:10]}")


def _seeds_summary(sweep: dict | None) -> str:
    """'hard claims on every seed: 9/9 (seeds 0–9)', or '—' without a committed sweep."""
    if not sweep:
        return "—"
    hard = [c for c in sweep["claims"].values() if c["hard"]]
    always = sum(c["held"] == c["of"] for c in hard)
    seeds = sweep["seeds"]
    mark = "✓" if always == len(hard) else "✗"
    return f"{mark} {always}/{len(hard)} hard claims held on every seed ({len(seeds)} seeds, {sweep['profile']})"


def _null_cell(claim: dict) -> str:
    null = claim.get("null")
    if not null:
        return "—"
    return _cell(f"{null['label']}: {format_value(null['value'])}" + (" (meets the target)" if null["holds"] else ""))


class _TableDirective(SphinxDirective):
    classes: tuple[str, ...] = ("kitlib-table",)

    def _render(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container(classes=list(self.classes))
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), self.content_offset, container)
        return [container]


class ScorecardDirective(_TableDirective):
    has_content = False

    def run(self):
        srcdir = Path(self.env.srcdir)
        book, full = _records(srcdir)
        for path in list((srcdir / "book").glob("*.json")) + list((srcdir / "results").glob("*.json")):
            self.env.note_dependency(str(path))
        lines = ["| chapter | run in book/ | seed sweep, from results/seeds/ | full profile (GPU), from results/ |",
                 "|---|---|---|---|"]
        for chapter in written_chapters(srcdir):
            link = f"{{doc}}`{_cell(chapter.title)} </book/{chapter.slug}>`"
            sweep = load_sweep(chapter.slug, srcdir)
            self.env.note_dependency(str(srcdir / "results" / "seeds" / f"{chapter.slug}.json"))
            lines.append(f"| {link} | {_summary(book.get(chapter.slug))} | {_seeds_summary(sweep)} | "
                         f"{_summary(full.get(chapter.slug))} |")
        return self._render(lines)


class ClaimsComparisonDirective(_TableDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        slug = self.arguments[0]
        srcdir = Path(self.env.srcdir)
        book, full = _records(srcdir)
        quick, gpu = book.get(slug), full.get(slug)
        if gpu is None:
            para = nodes.paragraph()
            para += nodes.Text("No full-profile (GPU) run record of this chapter is in results/ yet; run ")
            para += nodes.literal(text=f"python -m kitlib run {slug} --profile full --out results/")
            para += nodes.Text(" on a GPU and commit the JSON record to add one.")
            return [para]
        gpu_claims = {c["id"]: c for c in gpu["claims"]}
        quick_claims = {c["id"]: c for c in quick["claims"]} if quick else {}
        lines = [f"Full profile: {gpu['device_name']}, seed {gpu['seed']}, {gpu['wall_s']:.0f} s, "
                 f"{gpu['started'][:10]}.", "",
                 "| id | claim | target | quick | full |", "|---|---|---|---|---|"]
        for cid in dict.fromkeys(list(quick_claims) + list(gpu_claims)):
            ref = gpu_claims.get(cid) or quick_claims[cid]

            def show(c):
                return "—" if c is None else f"{'✓' if c['holds'] else '✗'} {_cell(format_value(c['value']))}"

            lines.append(f"| {cid} | {_cell(ref['statement'])} | {_cell(ref['target'])} | "
                         f"{show(quick_claims.get(cid))} | {show(gpu_claims.get(cid))} |")
        return self._render(lines)


class ClaimsIndexDirective(_TableDirective):
    has_content = False
    classes = ("kitlib-table", "full-width")   # sphinx-book-theme: use the margin too

    def run(self):
        srcdir = Path(self.env.srcdir)
        book, _ = _records(srcdir)
        lines = ["| chapter | id | claim | kind | measured | target | null control | seeds held |",
                 "|---|---|---|---|---|---|---|---|"]
        for chapter in written_chapters(srcdir):
            self.env.note_dependency(str(srcdir / "book" / f"{chapter.slug}.json"))
            self.env.note_dependency(str(srcdir / "results" / "seeds" / f"{chapter.slug}.json"))
            record, sweep = book.get(chapter.slug), load_sweep(chapter.slug, srcdir) or {}
            if record is None:
                continue
            link = f"{{doc}}`{chapter.slug} </book/{chapter.slug}>`"
            for c in record["claims"]:
                seeds = sweep.get("claims", {}).get(c["id"])
                held = f"{seeds['held']}/{seeds['of']}" if seeds else "—"
                mark = "✓" if c["holds"] else "✗"
                lines.append(f"| {link} | {c['id']} | {_cell(c['statement'])} | {c['kind']}, "
                             f"{'hard' if c['hard'] else 'soft'} | {mark} {_cell(format_value(c['value']))} | "
                             f"{_cell(c['target'])} | {_null_cell(c)} | {held} |")
        return self._render(lines)


def _check_verdicts(notebook_path: Path) -> dict[str, str]:
    """label → the line its check printed in the executed notebook ("exercise <label>: correct", ...)."""
    import nbformat

    from .course import ExerciseFormatError, exercise_cells

    if not notebook_path.exists():
        return {}
    notebook = nbformat.read(notebook_path, as_version=4)
    verdicts = {}
    try:
        pairs = exercise_cells(notebook, str(notebook_path))
    except ExerciseFormatError:       # an executed notebook older than the chapter's exercise format
        return {}
    for pair in pairs:
        outputs = notebook.cells[pair.check_index].get("outputs", [])
        text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
        verdicts[pair.label] = text.strip().splitlines()[-1] if text.strip() else ""
    return verdicts


class ExercisesIndexDirective(_TableDirective):
    """One short table per chapter: exercise (linked), the function to write, what it asks, minutes, what it
    builds on, and the verdict of its check on the chapter's own solution in this build's executed chapter."""

    has_content = False

    def run(self):
        from .exercises import exercises_of

        srcdir = Path(self.env.srcdir)
        book, _ = _records(srcdir)
        lines: list[str] = []
        for chapter in written_chapters(srcdir):
            exercises = exercises_of(chapter.slug)
            if not exercises:
                continue
            notebook = srcdir / "book" / f"{chapter.slug}.ipynb"
            self.env.note_dependency(str(notebook))
            verdicts = _check_verdicts(notebook)
            record = book.get(chapter.slug)
            wall = f" — the notebook runs in about {record['wall_s']:.0f} s (this build's quick run)" if record else ""
            lines += [f"**{{doc}}`{_cell(chapter.title)} </book/{chapter.slug}>`**{wall}", "",
                      "| exercise | write | what it asks | min | builds on | solution's check |",
                      "|---|---|---|---|---|---|"]
            for exercise in exercises:
                said = verdicts.get(exercise.label, "")
                verdict = ("✓ correct" if said.endswith(": correct") else
                           f"✗ {_cell(said)}" if said else "— (not in this build's executed chapter)")
                lines.append(f"| {{ref}}`{exercise.label} <{exercise.label}>` | `{exercise.function}` | "
                             f"{_cell(exercise.asks)} | {exercise.minutes} | {_cell(exercise.prerequisites)} | "
                             f"{verdict} |")
            lines.append("")
        return self._render(lines)


def setup(app):
    app.add_directive("exercises-index", ExercisesIndexDirective)
    app.add_directive("claims-index", ClaimsIndexDirective)
    app.add_directive("scorecard", ScorecardDirective)
    app.add_directive("claims-comparison", ClaimsComparisonDirective)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
