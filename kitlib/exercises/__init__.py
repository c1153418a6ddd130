"""Exercises whose answers a machine checks (the course pack, ``python -m kitlib course``).

Every exercise of a chapter is answered by **one function** that the student writes. The chapter holds the
reference solution in a code cell tagged ``solution`` and, right after it, a check cell::

    check_answer("flooding-ex-flood", flooded_loss)

The check calls the function on inputs it draws itself (the student does not see them) and compares the result
with an independent computation (a kitlib function, a closed form, a loop) to a stated tolerance. It prints

- ``exercise <label>: correct`` and returns True;
- ``exercise <label>: not answered yet`` and returns False when the function still raises the student
  notebook's ``NotImplementedError("exercise <label>")``;
- what a right answer does, in words (never the expected value), and raises :class:`WrongAnswer` otherwise.

A chapter's exercises are declared in ``kitlib/exercises/<slug with underscores>.py`` as a list ``EXERCISES``
of :class:`Exercise`; :func:`exercises_of` and :func:`get_exercise` read them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


class WrongAnswer(AssertionError):
    """The answer ran but does not do what the exercise asks; the message says what, in words."""


class UnknownExerciseError(KeyError):
    """A label that no chapter declares."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: the label of its ``{exercise}`` block, what it asks, and how its answer is verified.

    ``verify(answer)`` calls the student's function on hidden inputs and raises :class:`WrongAnswer` with a
    reason in words when it differs from the reference; ``expected`` says, in words, what a right answer does.
    """

    label: str
    chapter: str
    function: str          # the name of the function the student writes
    asks: str              # one sentence for the course README and the teaching page
    expected: str          # what a right answer does, in words (printed on a wrong answer; never the value)
    minutes: int           # expected time for a student
    prerequisites: str     # the sections of the chapter (and functions) it builds on
    verify: Callable[[Callable[..., Any]], None]

    def __post_init__(self):
        if not self.label.startswith(_label_prefix(self.chapter)):
            raise ValueError(f"exercise label {self.label!r} must start with {_label_prefix(self.chapter)!r}")
        if self.minutes <= 0:
            raise ValueError(f"exercise {self.label}: minutes must be positive")


_PREFIX = {"deepnet-residual": "deepnet-ex-", "dimension-formula": "dimension-ex-",
           "sampling-optimisation": "sampling-ex-", "seq2seq-stop": "seq2seq-ex-"}


def _label_prefix(slug: str) -> str:
    return _PREFIX.get(slug, f"{slug}-ex-")


def module_name(slug: str) -> str:
    return f"kitlib.exercises.{slug.replace('-', '_')}"


def exercises_of(slug: str) -> list[Exercise]:
    """The chapter's exercises in the order of the chapter; [] for a chapter without a module."""
    try:
        module = importlib.import_module(module_name(slug))
    except ModuleNotFoundError as err:
        if err.name == module_name(slug):
            return []
        raise
    found = list(module.EXERCISES)
    for exercise in found:
        if exercise.chapter != slug:
            raise ValueError(f"{module.__name__} declares {exercise.label} for chapter {exercise.chapter!r}")
    return found


def all_exercises() -> dict[str, Exercise]:
    from kitlib.chapters import SLUGS

    return {e.label: e for slug in SLUGS for e in exercises_of(slug)}


def get_exercise(label: str) -> Exercise:
    from kitlib.chapters import SLUGS

    for slug in SLUGS:
        if label.startswith(_label_prefix(slug)):
            for exercise in exercises_of(slug):
                if exercise.label == label:
                    return exercise
    raise UnknownExerciseError(f"no chapter declares exercise {label!r}; declared: "
                               f"{', '.join(sorted(all_exercises())) or 'none'}")


def check_answer(label: str, answer: Callable[..., Any]) -> bool:
    """Verify ``answer`` for exercise ``label``; print the verdict (see the module docstring)."""
    exercise = get_exercise(label)
    if not callable(answer):
        reason = f"the answer must be the function `{exercise.function}`, got {type(answer).__name__}"
        print(f"exercise {label}: not right yet. {reason}\nA right answer: {exercise.expected}")
        raise WrongAnswer(f"exercise {label}: {reason}")
    try:
        exercise.verify(answer)
    except NotImplementedError as err:
        if str(err) != f"exercise {label}":
            raise
        print(f"exercise {label}: not answered yet")
        return False
    except WrongAnswer as err:
        print(f"exercise {label}: not right yet. {err}\nA right answer: {exercise.expected}")
        raise WrongAnswer(f"exercise {label}: {err}") from None
    except Exception as err:       # the answer crashed on a hidden input (overflow, shape error, ...)
        reason = f"your function raised {type(err).__name__} on a hidden input: {str(err)[:200]}"
        print(f"exercise {label}: not right yet. {reason}\nA right answer: {exercise.expected}")
        raise WrongAnswer(f"exercise {label}: {reason}") from err
    print(f"exercise {label}: correct")
    return True


# ---- helpers for verify functions -------------------------------------------------------------------------


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` (tensor, array, number or sequence) as a float64 array; WrongAnswer if it is not numeric."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise WrongAnswer(f"{what} should be numbers, got {type(value).__name__}") from None
    return array


def as_number(value: Any, what: str) -> float:
    """``value`` (a Python number, a NumPy scalar, or a tensor or array holding one entry) as a float;
    WrongAnswer if it is anything else (a bool, a string, several entries)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise WrongAnswer(f"{what} should be one number, got a {type(value).__name__}")
    array = as_array(value, what)
    if array.size != 1:
        raise WrongAnswer(f"{what} should be one number, got shape {tuple(array.shape)}")
    return float(array.reshape(()))


def expect_close(got: Any, want: Any, *, what: str, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Raise WrongAnswer unless ``got`` has ``want``'s shape and |got − want| ≤ atol + rtol·|want| everywhere.

    The message gives the shape or how many entries differ and the largest relative error, not the values."""
    got_a, want_a = as_array(got, what), as_array(want, what)
    if got_a.shape != want_a.shape:
        raise WrongAnswer(f"{what} should have shape {tuple(want_a.shape)}, got {tuple(got_a.shape)}")
    if not np.all(np.isfinite(got_a) == np.isfinite(want_a)):
        raise WrongAnswer(f"{what}: some entries are NaN or infinite where they should be finite (or the reverse)")
    finite = np.isfinite(want_a)
    bad = np.abs(got_a - want_a) > atol + rtol * np.abs(want_a)
    bad &= finite
    if bad.any():
        rel = float((np.abs(got_a - want_a)[bad] / np.maximum(np.abs(want_a)[bad], atol)).max())
        hint = ("; an error this small usually comes from float32 rounding (compute in float64) or from too "
                "coarse a numerical method (grid, iterations)" if rtol > 0 and rel < 1e-4 else "")
        if bad.size == 1:    # a relative error of one number would give the number away
            raise WrongAnswer(f"{what} differs from an independent computation{hint}")
        tolerance = f"relative tolerance {rtol:g}" if rtol > 0 else f"absolute tolerance {atol:g}"
        raise WrongAnswer(f"{what}: {int(bad.sum())} of {bad.size} entries differ from an independent "
                          f"computation (largest relative error of order 1e{np.floor(np.log10(rel)):+.0f}; "
                          f"{tolerance}){hint}")


def hidden_generator(label: str, salt: int = 0) -> torch.Generator:
    """A torch generator seeded from the label: the same hidden inputs on every run, independent of the
    chapter's global random state (a check never changes what the chapter draws next)."""
    seed = (sum((i + 1) * ord(ch) for i, ch in enumerate(label)) * 7919 + salt) % (2 ** 31)
    return torch.Generator().manual_seed(seed)
