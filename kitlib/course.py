"""The course pack: student and instructor notebooks generated from a chapter's jupytext source.

A chapter's exercises section holds, per exercise, an ``{exercise}`` block (what to write), a code cell tagged
``solution`` (imports and exactly one function: the reference answer), a check cell
``check_answer("<label>", <function>)`` and optionally a ``{solution}`` block (notes on the answer).

- instructor notebook: the chapter as a notebook, solutions in place and visible, notes as markdown;
- student notebook: each solution cell replaced by an *answer cell*, the same function whose body is
  ``raise NotImplementedError("exercise <label>")`` (so the notebook still runs to the end and each check prints
  "not answered yet"); the notes are left out.

Both keep everything before the exercises as in the book (quick profile, no run record written).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

CHECK_CALL = re.compile(r'^check_answer\(\s*"(?P<label>[^"]+)"\s*,\s*(?P<function>\w+)\s*\)\s*$')
_DIRECTIVE = re.compile(r"^(?P<fence>`{3,}|~{3,})\{(?P<name>exercise|solution|admonition|claims-comparison)\}"
                        r"(?P<argument>[^\n]*)\n(?P<options>(?:[ \t]*:[\w-]+:[^\n]*\n)*)"
                        r"(?P<body>.*?)^(?P=fence)[ \t]*$",
                        re.M | re.S)


class ExerciseFormatError(ValueError):
    """A chapter's exercises section does not follow the format above; the message says what to fix."""


@dataclass(frozen=True)
class ExerciseCells:
    label: str
    function: str
    solution_index: int      # index of the solution cell in the notebook
    check_index: int


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def solution_function(source: str, where: str = "solution cell") -> ast.FunctionDef:
    """The one top-level function of a solution cell; imports may precede it, nothing else may."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ExerciseFormatError(f"{where}: {err}") from None
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    others = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom))]
    if len(functions) != 1 or others:
        raise ExerciseFormatError(f"{where}: a solution cell holds imports and exactly one function definition "
                                  f"(found {len(functions)} functions and {len(others)} other statements)")
    return functions[0]


def exercise_cells(notebook, where: str = "chapter") -> list[ExerciseCells]:
    """Pair every cell tagged ``solution`` (or ``answer``, in a student notebook) with the check cell right
    after it (in notebook order)."""
    found = []
    cells = notebook.cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or not {"solution", "answer"} & set(_tags(cell)):
            continue
        function = solution_function(cell.source, f"{where}, cell {i}").name
        following = cells[i + 1] if i + 1 < len(cells) else None
        match = CHECK_CALL.match(following.source.strip()) if following is not None else None
        if following is None or following.cell_type != "code" or match is None:
            raise ExerciseFormatError(f"{where}, cell {i}: a solution cell must be followed by a cell holding only "
                                      f'check_answer("<label>", {function})')
        if match["function"] != function:
            raise ExerciseFormatError(f"{where}, cell {i + 1}: checks {match['function']} but the solution "
                                      f"defines {function}")
        found.append(ExerciseCells(match["label"], function, i, i + 1))
    return found


def validate_exercises(notebook, slug: str) -> list[ExerciseCells]:
    """The chapter's exercise cells, after checking that the ``{exercise}`` blocks, the check cells and the
    declarations in ``kitlib/exercises/`` name the same labels in the same order, and that no check cell stands
    without its solution cell (a solution that lost its tag would reach the student notebook)."""
    from .exercises import exercises_of

    pairs = exercise_cells(notebook, slug)
    checks = [p.label for p in pairs]
    paired = {p.check_index for p in pairs}
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and "check_answer(" in cell.source and i not in paired:
            raise ExerciseFormatError(f"{slug}, cell {i}: a check cell must follow a code cell tagged 'solution' "
                                      f"(tag the solution cell, or it is copied into the student notebook)")
    blocks = exercise_block_labels(notebook)
    declared = [e.label for e in exercises_of(slug)]
    if not pairs:
        raise ExerciseFormatError(f"{slug}: no exercise with a solution cell and a check cell")
    if not blocks == checks == declared:
        raise ExerciseFormatError(f"{slug}: the {{exercise}} blocks {blocks}, the check cells {checks} and "
                                  f"kitlib/exercises/ ({declared}) must name the same labels in the same order")
    return pairs


def exercise_block_labels(notebook) -> list[str]:
    """Labels of the ``{exercise}`` blocks in the markdown cells, in order."""
    labels = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for block in _DIRECTIVE.finditer(cell.source):
                if block["name"] == "exercise":
                    labels.append(_option(block["options"], "label"))
    return labels


def _option(options: str, name: str) -> str:
    match = re.search(rf"^\s*:{name}:\s*(.*?)\s*$", options, re.M)
    return match.group(1) if match else ""


def student_answer_source(source: str, label: str) -> str:
    """The solution cell with its function's body replaced by ``raise NotImplementedError("exercise <label>")``
    (imports and signature kept; the docstring is left out, as it may state the answer: the exercise's text
    says what the function takes and returns)."""
    function = solution_function(source)
    tree = ast.parse(source)
    placeholder = "__answer_body__"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            node.body = [ast.Expr(ast.Name(placeholder))]
    stub = "\n".join(ast.unparse(node) for node in tree.body)
    stub = stub.replace(placeholder, f'raise NotImplementedError("exercise {label}")')
    return f"# Exercise {label}: write the body of `{function.name}` (the check below calls it).\n{stub}\n"


_ROLES = ((re.compile(r"\{cite\}`([^`]+)`"), r"[\1]"),
          (re.compile(r"\{(?:doc|ref)\}`([^`<]+?)\s*<[^`>]+>`"), r"*\1*"),      # {doc}`text <target>`
          (re.compile(r"\{ref\}`([^`]+)`"), r"`\1`"), (re.compile(r"\{doc\}`([^`]+)`"), r"*\1*"))


def _markdown_directives(source: str, *, keep_solutions: bool) -> str:
    """The book's MyST as plain Jupyter markdown: ``{exercise}`` and ``{admonition}`` blocks as bold-titled
    paragraphs, ``{solution}`` blocks as notes (instructor) or removed (student), the render-time claims table
    removed (the cell before it prints the table), citation and cross-reference roles as plain text."""

    def replace(block: re.Match) -> str:
        label = _option(block["options"], "label") or block["argument"].strip()
        body = block["body"].strip()
        if block["name"] == "exercise":
            return f"**Exercise `{label}`.** {body}"
        if block["name"] == "admonition":
            return f"**{label}.**\n\n{body}"
        if block["name"] == "claims-comparison":
            return ""
        return f"**Notes on the solution of `{label}`.** {body}" if keep_solutions else ""

    text = _DIRECTIVE.sub(replace, source)
    for pattern, plain in _ROLES:
        text = pattern.sub(plain, text)
    return text.strip()


def course_notebook(notebook, *, slug: str, role: str, header: str):
    """A copy of the chapter ``notebook`` for ``role`` ("student" or "instructor") with ``header`` on top."""
    import copy

    import nbformat

    if role not in ("student", "instructor"):
        raise ValueError(f"role must be 'student' or 'instructor', got {role!r}")
    out = copy.deepcopy(notebook)
    pairs = {p.solution_index: p for p in exercise_cells(out, slug)}
    cells = []
    for i, cell in enumerate(out.cells):
        if cell.cell_type == "markdown":
            cell.source = _markdown_directives(cell.source, keep_solutions=role == "instructor")
            if not cell.source:
                continue
        elif i in pairs:
            tags = [t for t in _tags(cell) if t not in ("solution", "hide-input")]
            if role == "student":
                cell.source = student_answer_source(cell.source, pairs[i].label)
                tags.append("answer")
            else:
                tags.append("solution")
            cell.metadata["tags"] = tags
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    first = nbformat.v4.new_markdown_cell(header)
    first.metadata["tags"] = ["course-header"]
    out.cells = cells[:1] + [first] + cells[1:] if cells and cells[0].cell_type == "markdown" else [first] + cells
    out.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    out.metadata.pop("jupytext", None)
    return out
