"""kitlib.exercises itself: the three verdicts of check_answer, the comparison helpers' messages (what is
wrong, never the expected value) and the hidden inputs' independence from the chapter's random state."""

import numpy as np
import pytest
import torch

import kitlib.exercises as ex
from kitlib.exercises import (Exercise, UnknownExerciseError, WrongAnswer, as_number, check_answer, expect_close,
                              get_exercise, hidden_generator)


def _verify_square(answer):
    x = torch.randn(7, generator=hidden_generator("flooding-ex-toy"), dtype=torch.float64)
    expect_close(answer(x), x ** 2, what="the squares of 7 hidden numbers")


TOY = Exercise(label="flooding-ex-toy", chapter="flooding", function="square", asks="Square a tensor.",
               expected="each entry squared, same shape", minutes=1, prerequisites="none", verify=_verify_square)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(ex, "get_exercise", lambda label: TOY if label == TOY.label else get_exercise(label))


def test_a_right_answer_prints_correct(toy, capsys):
    assert check_answer(TOY.label, lambda x: x * x) is True
    assert capsys.readouterr().out == "exercise flooding-ex-toy: correct\n"


def test_the_student_stub_prints_not_answered(toy, capsys):
    def square(x):
        raise NotImplementedError("exercise flooding-ex-toy")

    assert check_answer(TOY.label, square) is False
    assert capsys.readouterr().out == "exercise flooding-ex-toy: not answered yet\n"


def test_another_not_implemented_error_is_not_taken_for_an_empty_answer(toy):
    def square(x):
        raise NotImplementedError("some library function")

    with pytest.raises(NotImplementedError, match="some library function"):
        check_answer(TOY.label, square)


def test_a_wrong_answer_says_what_was_expected_in_words_and_fails(toy, capsys):
    with pytest.raises(WrongAnswer, match="flooding-ex-toy"):
        check_answer(TOY.label, lambda x: 2 * x)
    out = capsys.readouterr().out
    assert out.startswith("exercise flooding-ex-toy: not right yet.")
    assert "A right answer: each entry squared, same shape" in out and "largest relative error" in out
    with pytest.raises(WrongAnswer, match="must be the function `square`"):
        check_answer(TOY.label, 4.0)


def test_expect_close_reports_shape_and_mismatches_without_the_values():
    want = torch.tensor([1.2345678, 2.0, 3.0], dtype=torch.float64)
    with pytest.raises(WrongAnswer, match=r"should have shape \(3,\), got \(2,\)"):
        expect_close(want[:2], want, what="x")
    with pytest.raises(WrongAnswer) as info:
        expect_close(want * torch.tensor([1.0, 1.0, 1.5], dtype=torch.float64), want, what="x")
    assert "1 of 3 entries" in str(info.value) and "1.23" not in str(info.value) and "4.5" not in str(info.value)
    assert "of order 1e-1;" in str(info.value)
    with pytest.raises(WrongAnswer) as info:
        expect_close(torch.tensor(1.01), torch.tensor(1.0), what="the number")
    assert str(info.value) == "the number differs from an independent computation"   # no error size: no value
    with pytest.raises(WrongAnswer, match="float32 rounding"):
        expect_close(want.float().double() * (1 + 1e-7), want, what="x", rtol=1e-9)
    with pytest.raises(WrongAnswer) as info:             # an absolute tolerance is named as such, no float32 hint
        expect_close(want + 2e-7, want, what="x", rtol=0, atol=1e-7)
    assert "absolute tolerance 1e-07" in str(info.value) and "float32" not in str(info.value)
    with pytest.raises(WrongAnswer, match="NaN or infinite"):
        expect_close(torch.tensor([1.0, float("nan"), 3.0]), want, what="x")
    with pytest.raises(WrongAnswer, match="should be numbers"):
        expect_close("abc", want, what="x")
    expect_close(want.float(), want, what="x", rtol=1e-6)      # float32 of the same values passes


def test_an_answer_that_crashes_on_a_hidden_input_gets_a_verdict(toy, capsys):
    def square(x):
        return float(10.0) ** 400.0 * x       # OverflowError, as a naive density in 650 dimensions

    with pytest.raises(WrongAnswer, match="raised OverflowError on a hidden input") as info:
        check_answer(TOY.label, square)
    assert isinstance(info.value.__cause__, OverflowError)
    assert "A right answer:" in capsys.readouterr().out


def test_as_number_takes_one_entry_of_any_numeric_kind_and_nothing_else():
    for one in (2.5, 2, np.float32(2.5), torch.tensor(2.5), torch.tensor([2.5]), np.array([[2.5]])):
        assert as_number(one, "x") == pytest.approx(float(np.asarray(one).reshape(())))
    for bad, message in ((True, "got a bool"), (torch.tensor([1.0, 2.0]), r"got shape \(2,\)"), ("2", "got a str")):
        with pytest.raises(WrongAnswer, match=message):
            as_number(bad, "x")


def test_hidden_inputs_do_not_touch_the_global_random_state():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    a = torch.randn(4, generator=hidden_generator("flooding-ex-toy"))
    b = torch.randn(4, generator=hidden_generator("flooding-ex-toy"))
    c = torch.randn(4, generator=hidden_generator("flooding-ex-other"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(before, torch.get_rng_state())


def test_labels_are_checked():
    with pytest.raises(UnknownExerciseError, match="no chapter declares exercise 'nope'"):
        get_exercise("nope")
    with pytest.raises(ValueError, match="must start with 'wgan-ex-'"):
        Exercise(label="gan-1", chapter="wgan", function="f", asks="", expected="", minutes=1, prerequisites="",
                 verify=lambda answer: None)
    assert np.all([e.label.startswith(ex._label_prefix(e.chapter)) for e in ex.all_exercises().values()])
