"""Every exercise's check, against the chapter's own solution, the student notebook's empty answer, and the
plausible wrong answers named in ``tests/test_exercises_<slug>.py`` (``WRONG_ANSWERS = {label: {name: fn}}``)."""

import importlib.util
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

from kitlib.chapters import chapter_source, written_chapters
from kitlib.course import exercise_block_labels, exercise_cells, student_answer_source
from kitlib.exercises import WrongAnswer, check_answer, exercises_of

SLUGS = [c.slug for c in written_chapters()]
TESTS = Path(__file__).parent


def _chapter(slug):
    return jupytext.read(chapter_source(slug))


def _define(source: str, name: str):
    """Execute a solution (or answer) cell on its own: it may use ``torch`` and ``np`` and import the rest."""
    namespace = {"torch": torch, "np": np}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def _solutions():
    for slug in SLUGS:
        notebook = _chapter(slug)
        for pair in exercise_cells(notebook, slug):
            yield pytest.param(slug, pair, notebook.cells[pair.solution_index].source, id=pair.label)


def _wrong_answers():
    for slug in SLUGS:
        path = TESTS / f"test_exercises_{slug.replace('-', '_')}.py"
        if not path.exists():
            continue
        spec = importlib.util.spec_from_file_location(f"_wrong_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for label, answers in module.WRONG_ANSWERS.items():
            for name, answer in answers.items():
                yield pytest.param(label, answer, id=f"{label}:{name}")


WRONG = list(_wrong_answers())


@pytest.mark.parametrize("slug", SLUGS)
def test_exercise_blocks_solution_cells_and_declarations_agree(slug):
    notebook = _chapter(slug)
    blocks = exercise_block_labels(notebook)
    checked = [p.label for p in exercise_cells(notebook, slug)]
    declared = [e.label for e in exercises_of(slug)]
    assert blocks, f"{slug} has no {{exercise}} block"
    assert blocks == checked == declared, (f"{slug}: exercise blocks {blocks}, check cells {checked}, "
                                           f"kitlib.exercises declares {declared}")
    for pair, exercise in zip(exercise_cells(notebook, slug), exercises_of(slug)):
        assert pair.function == exercise.function
        assert "hide-input" in notebook.cells[pair.solution_index].metadata.get("tags", [])


@pytest.mark.parametrize("slug, pair, source", list(_solutions()))
def test_the_chapter_solution_passes_its_check(slug, pair, source, capsys):
    assert check_answer(pair.label, _define(source, pair.function)) is True
    assert capsys.readouterr().out.strip().endswith(f"exercise {pair.label}: correct")


SEEDING = [("torch", "manual_seed"), ("torch", "seed"), ("torch.random", "manual_seed"), ("torch.random", "seed"),
           ("torch.cuda", "manual_seed"), ("torch.cuda", "manual_seed_all"), ("torch.cuda", "seed"),
           ("torch.cuda", "seed_all"), ("numpy.random", "seed")]


@pytest.mark.parametrize("slug, pair, source", list(_solutions()))
def test_a_check_never_touches_the_chapter_random_state(slug, pair, source, monkeypatch):
    """Hidden inputs come from the check's own generators: no global seeding (torch.manual_seed would also
    reseed CUDA, which fork_rng(devices=[]) does not restore), and the CPU and numpy states are left as found."""
    import importlib

    answer = _define(source, pair.function)
    for module, name in SEEDING:
        def refuse(*args, _name=f"{module}.{name}", **kwargs):
            raise AssertionError(f"the check of {pair.label} called {_name}")
        monkeypatch.setattr(importlib.import_module(module), name, refuse)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    assert check_answer(pair.label, answer) is True
    assert torch.equal(torch_state, torch.get_rng_state())
    assert all(np.array_equal(a, b) for a, b in zip(numpy_state[1:3], np.random.get_state()[1:3]))


@pytest.mark.parametrize("slug, pair, source", list(_solutions()))
def test_an_empty_answer_cell_reports_not_answered(slug, pair, source, capsys):
    stub = student_answer_source(source, pair.label)
    assert "raise NotImplementedError" in stub and f"exercise {pair.label}" in stub
    assert check_answer(pair.label, _define(stub, pair.function)) is False
    assert capsys.readouterr().out.strip() == f"exercise {pair.label}: not answered yet"


def test_every_exercise_has_a_named_wrong_answer():
    labels = {p.values[0] for p in WRONG}
    declared = {e.label for slug in SLUGS for e in exercises_of(slug)}
    assert declared <= labels, f"no wrong answer is tested for {sorted(declared - labels)}"


@pytest.mark.parametrize("label, answer", WRONG)
def test_a_plausible_wrong_answer_fails_and_says_what_was_expected(label, answer, capsys):
    with pytest.raises(WrongAnswer):
        check_answer(label, answer)
    out = capsys.readouterr().out
    assert out.startswith(f"exercise {label}: not right yet.") and "A right answer:" in out
