"""Chapter format v2, read from the sources: the runner's parameters, a collapsed set-up cell, claims declared
once, short visible cells (median ≤ 15 non-blank lines, none over 40), no claim bookkeeping in prose cells."""

import re
import statistics

import jupytext
import pytest

from kitlib.chapters import chapter_source, written_chapters

SLUGS = [c.slug for c in written_chapters()]
HIDDEN = {"hide-input", "remove-input", "remove-cell", "parameters"}
PARAMETERS = ("slug", "profile", "seed", "device", "smoke", "record_path")


def code_cells(slug):
    notebook = jupytext.read(chapter_source(slug))
    return [c for c in notebook.cells if c.cell_type == "code"]


def tags(cell):
    return set(cell.metadata.get("tags", []))


def size(cell):
    return sum(1 for line in cell.source.splitlines() if line.strip())


@pytest.mark.parametrize("slug", SLUGS)
def test_parameters_cell_declares_what_the_runner_passes(slug):
    cells = code_cells(slug)
    assert "parameters" in tags(cells[0]), "the first code cell must be tagged 'parameters'"
    names = re.findall(r"^(\w+)\s*=", cells[0].source, flags=re.M)
    assert tuple(names) == PARAMETERS, f"parameters cell declares {names}, the runner passes {PARAMETERS}"
    assert re.search(rf'^slug = "{re.escape(slug)}"$', cells[0].source, flags=re.M)


@pytest.mark.parametrize("slug", SLUGS)
def test_set_up_and_claims_are_collapsed_and_declared_once(slug):
    cells = code_cells(slug)
    assert "hide-input" in tags(cells[1]), "the set-up cell (imports, profiles, run) must be tagged hide-input"
    assert "kitlib.run.start(" in cells[1].source
    declaring = [c for c in cells if "run.claims(" in c.source]
    assert len(declaring) == 1 and "hide-input" in tags(declaring[0]), "claims are declared in one hidden cell"
    everything = "\n".join(c.source for c in cells)
    assert not re.search(r"\.check(_range|_close)?\(", everything), "claims are measured with claims.measure"
    assert cells[-1].source.strip() == "run.finish()"


@pytest.mark.parametrize("slug", SLUGS)
def test_visible_cells_are_short(slug):
    visible = [c for c in code_cells(slug) if not tags(c) & HIDDEN]
    sizes = [size(c) for c in visible]
    longest = max(visible, key=size)
    assert statistics.median(sizes) <= 15, f"median visible cell has {statistics.median(sizes)} lines"
    assert size(longest) <= 40, f"a visible cell has {size(longest)} lines:\n{longest.source[:300]}"
