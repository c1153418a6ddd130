"""The course pack: notebook transformation (kitlib.course), the pack writer and its command line, and two
chapters' packs executed end to end (all chapters: ``make course-check``)."""

import ast

import jupytext
import nbformat
import pytest

from kitlib.__main__ import main
from kitlib.chapters import chapter_source, written_chapters
from kitlib.course import (ExerciseFormatError, course_notebook, exercise_cells, solution_function,
                           student_answer_source, validate_exercises)
from kitlib.course_pack import ROLES, build_pack, execute_notebook, execute_pack, readme_text
from kitlib.exercises import exercises_of

# Two chapters' packs run in `make test` (the two shortest quick runs); `make course-check` runs all of them.
EXECUTED_IN_TESTS = ("class-imbalance", "dimension-formula")
SLUGS = [c.slug for c in written_chapters()]

SOLUTION = '''import math

def tilted(x, b=0.5):
    """The answer: |x - b| + b."""
    return abs(x - b) + b
'''

CHAPTER = '''---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# A chapter

Before, citing {cite}`key`.

```{code-cell} ipython3
x = 1
```

## Exercises

```{exercise}
:label: toy-ex-one

Write `tilted(x, b)`.
```

```{code-cell} ipython3
:tags: [solution, hide-input]

%s
```

```{code-cell} ipython3
check_answer("toy-ex-one", tilted)
```

```{solution} toy-ex-one
:class: dropdown

Secret notes.
```
''' % SOLUTION


def _toy():
    return jupytext.reads(CHAPTER, fmt="md:myst")


def test_the_answer_cell_keeps_imports_and_signature_and_raises_the_labelled_error():
    stub = student_answer_source(SOLUTION, "toy-ex-one")
    namespace = {}
    exec(stub, namespace)
    assert "import math" in stub and "def tilted(x, b=0.5):" in stub
    assert "|x - b|" not in stub and "abs(" not in stub, "the docstring and body (the answer) are left out"
    with pytest.raises(NotImplementedError, match="^exercise toy-ex-one$"):
        namespace["tilted"](1.0)


@pytest.mark.parametrize("source, problem", [
    ("def a():\n    pass\ndef b():\n    pass\n", "exactly one function"),
    ("y = 2\ndef a():\n    pass\n", "1 other statements"),
    ("def a(:\n", "solution cell"),
])
def test_a_solution_cell_holds_imports_and_one_function(source, problem):
    with pytest.raises(ExerciseFormatError, match=problem):
        solution_function(source)


def test_a_solution_must_be_followed_by_its_check():
    broken = _toy()
    broken.cells[-2].source = 'check_answer("toy-ex-one", other)'
    with pytest.raises(ExerciseFormatError, match="checks other but the solution defines tilted"):
        exercise_cells(broken)
    del broken.cells[-2]
    with pytest.raises(ExerciseFormatError, match="must be followed by"):
        exercise_cells(broken)


@pytest.mark.parametrize("role", ROLES)
def test_student_and_instructor_notebooks_differ_only_in_solutions(role):
    notebook = course_notebook(_toy(), slug="toy", role=role, header="HEADER")
    text = "\n".join(c.source for c in notebook.cells)
    assert "HEADER" in text and "{exercise}" not in text and "{solution}" not in text and "{cite}" not in text
    assert "**Exercise `toy-ex-one`.** Write `tilted(x, b)`." in text and "[key]" in text
    assert 'check_answer("toy-ex-one", tilted)' in text
    answer = next(c for c in notebook.cells if "def tilted" in c.source)
    if role == "student":
        assert "abs(x - b)" not in text and "Secret notes" not in text
        assert answer.metadata["tags"] == ["answer"]
    else:
        assert "abs(x - b)" in text and "Secret notes" in text
        assert "hide-input" not in answer.metadata["tags"]
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_every_chapter_pack_is_written_and_listed(tmp_path):
    slugs = [s for s in ("flooding", "class-imbalance") if exercises_of(s)]
    written = build_pack(slugs, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(
        f"{role}/{slug}.ipynb" for slug in slugs for role in ROLES)
    readme = readme_text(slugs)
    for slug in slugs:
        student = nbformat.read(tmp_path / "student" / f"{slug}.ipynb", as_version=4)
        source = jupytext.read(chapter_source(slug))
        assert len(exercise_cells(student)) == len(exercise_cells(source)) == len(exercises_of(slug))
        for exercise in exercises_of(slug):
            assert f"`{exercise.label}`" in readme
            assert f'raise NotImplementedError("exercise {exercise.label}")' in "\n".join(
                c.source for c in student.cells)


def _untagged_first_solution(notebook):
    cell = notebook.cells[exercise_cells(notebook)[0].solution_index]
    cell.metadata["tags"] = ["hide-input"]
    return notebook


def test_a_chapter_whose_exercises_do_not_line_up_is_refused():
    source = jupytext.read(chapter_source("class-imbalance"))
    assert [p.label for p in validate_exercises(source, "class-imbalance")] == [
        e.label for e in exercises_of("class-imbalance")]
    with pytest.raises(ExerciseFormatError, match="must follow a code cell tagged 'solution'"):
        validate_exercises(_untagged_first_solution(jupytext.read(chapter_source("class-imbalance"))),
                           "class-imbalance")
    relabelled = jupytext.read(chapter_source("class-imbalance"))
    check = relabelled.cells[exercise_cells(relabelled)[0].check_index]
    check.source = check.source.replace("class-imbalance-ex-f1", "class-imbalance-ex-f2")
    with pytest.raises(ExerciseFormatError, match="must name the same labels in the same order"):
        validate_exercises(relabelled, "class-imbalance")


def test_a_broken_chapter_leaves_the_pack_folder_as_it_was(tmp_path):
    root = tmp_path / "repo"
    (root / "chapters").mkdir(parents=True)
    good = chapter_source("class-imbalance").read_text()
    (root / "chapters" / "class-imbalance.md").write_text(good)
    broken = _untagged_first_solution(jupytext.read(chapter_source("flooding")))
    jupytext.write(broken, root / "chapters" / "flooding.md", fmt="md:myst")
    with pytest.raises(ExerciseFormatError):
        build_pack(["class-imbalance", "flooding"], tmp_path / "pack", root=root)
    assert not (tmp_path / "pack").exists()


@pytest.mark.parametrize("slug", [s for s in SLUGS if exercises_of(s)])
def test_no_line_of_a_solution_reaches_the_student_notebook(slug):
    source = jupytext.read(chapter_source(slug))
    student = course_notebook(source, slug=slug, role="student", header="")
    text = "\n".join(c.source for c in student.cells)
    for pair in exercise_cells(source):
        body = solution_function(source.cells[pair.solution_index].source).body
        lines = [line.strip() for node in body if not isinstance(node, (ast.Import, ast.ImportFrom))
                 for line in ast.unparse(node).splitlines()]
        leaked = [line for line in lines if len(line) > 25 and not line.startswith(("import ", "from "))
                  and line in text]
        assert not leaked, f"{pair.label}: solution lines in the student notebook: {leaked}"


def test_execute_rejects_a_wrong_solution_and_a_filled_student_answer(tmp_path):
    """--execute's verdict can fail: a notebook whose solution is wrong (instructor) or filled in (student)."""
    cells = [nbformat.v4.new_code_cell("from kitlib.exercises import check_answer"),
             nbformat.v4.new_code_cell("def posthoc_predictions(logits, counts, tau):\n"
                                       "    return logits.argmax(-1)"),
             nbformat.v4.new_code_cell('check_answer("class-imbalance-ex-posthoc", posthoc_predictions)')]
    cells[1].metadata["tags"] = ["solution"]
    path = tmp_path / "instructor" / "class-imbalance.ipynb"
    path.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    for role in ROLES:
        check = execute_notebook(path, role, "class-imbalance", timeout=120)
        assert not check.ok
        assert any("the chapter declares" in p for p in check.problems)
        assert any("class-imbalance-ex-posthoc printed" in p or "a cell failed" in p for p in check.problems)


def test_the_command_refuses_bad_input_before_writing(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["course", "class-imbalance", "--out", str(a_file)])
    assert exit_info.value.code == 2 and "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["course", "no-such-chapter", "--out", str(tmp_path / "pack")])
    assert exit_info.value.code == 2 and not (tmp_path / "pack").exists()


@pytest.mark.parametrize("slug", EXECUTED_IN_TESTS)
def test_the_pack_executes_with_every_check_reporting_as_it_should(slug, tmp_path):
    """Instructor: every check prints "correct"; student: the notebook runs to the end and every check prints
    "not answered yet" (one chapter per test, so the two test workers take one each)."""
    build_pack([slug], tmp_path)
    checks = execute_pack([slug], tmp_path)
    assert [(c.role, c.ok) for c in checks] == [(role, True) for role in ROLES], [c.problems for c in checks]
