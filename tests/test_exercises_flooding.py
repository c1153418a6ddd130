"""Plausible wrong answers to the flooding exercises (tests/test_exercises.py runs each against its check)."""

import numpy as np
import torch


def _rate_from_the_start(losses, flood_level):
    """Counts the sign changes from the first step on, not from the first crossing of b."""
    below = np.asarray(losses) < flood_level
    return float(np.mean(below[1:] != below[:-1]))


def _rate_per_step(losses, flood_level):
    """Divides the number of changes by the number of steps instead of the number of consecutive pairs."""
    below = np.asarray(losses) < flood_level
    below = below[int(np.argmax(below)):]
    return float((below[1:] != below[:-1]).sum() / len(below))


def _ascent_fraction(losses, flood_level):
    """The fraction of steps below b after the first crossing (F5-ascent), not the fraction of sign changes."""
    below = np.asarray(losses) < flood_level
    return float(np.mean(below[int(np.argmax(below)):]))


def _penalty_without_half(loss_fn, theta, eps_descent, eps_ascent):
    """λ = ε₁ε₂/(ε₁ − ε₂): the ½ of ∇‖g‖² = 2Hg forgotten."""
    loss = loss_fn(theta)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    return loss + eps_descent * eps_ascent / (eps_descent - eps_ascent) * (grad**2).sum()


def _penalty_detached(loss_fn, theta, eps_descent, eps_ascent):
    """The right value, but ∇L computed without create_graph: the penalty is a constant to autograd."""
    loss = loss_fn(theta)
    (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
    return loss + eps_descent * eps_ascent / (2 * (eps_descent - eps_ascent)) * (grad**2).sum()


def _penalty_norm_not_squared(loss_fn, theta, eps_descent, eps_ascent):
    """λ‖∇L‖ instead of λ‖∇L‖²."""
    loss = loss_fn(theta)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    return loss + eps_descent * eps_ascent / (2 * (eps_descent - eps_ascent)) * grad.norm()


def _penalty_on_a_copy(loss_fn, theta, eps_descent, eps_ascent):
    """The right value and a differentiable graph, but built on a detached copy of θ, not on the θ passed in."""
    own = theta.detach().clone().requires_grad_(True)
    loss = loss_fn(own)
    (grad,) = torch.autograd.grad(loss, own, create_graph=True)
    return loss + eps_descent * eps_ascent / (2 * (eps_descent - eps_ascent)) * (grad**2).sum()


def _noisy_accuracy(probabilities, noisy_labels, clean_labels):
    """The accuracy on all noisy training labels: the unflipped points counted too."""
    return float((probabilities.argmax(1) == noisy_labels).double().mean())


def _flips_corrected(probabilities, noisy_labels, clean_labels):
    """Among the flipped points, the fraction predicted as the clean label (flips corrected, not fitted)."""
    flipped = noisy_labels != clean_labels
    return float((probabilities.argmax(1)[flipped] == clean_labels[flipped]).double().mean())


def _fitted_over_all_points(probabilities, noisy_labels, clean_labels):
    """The fitted flips divided by N instead of by the number of flipped labels."""
    flipped = noisy_labels != clean_labels
    return float((probabilities.argmax(1)[flipped] == noisy_labels[flipped]).sum() / len(noisy_labels))


def _argmax_over_points(probabilities, noisy_labels, clean_labels):
    """The argmax over the points (dim 0) instead of over the classes: one "prediction" per class."""
    flipped = noisy_labels != clean_labels
    return float((probabilities.argmax(0)[flipped] == noisy_labels[flipped]).double().mean())


WRONG_ANSWERS = {
    "flooding-ex-signs": {"from the start": _rate_from_the_start, "per step": _rate_per_step,
                         "ascent fraction": _ascent_fraction},
    "flooding-ex-penalty": {"without the half": _penalty_without_half, "detached gradient": _penalty_detached,
                            "norm not squared": _penalty_norm_not_squared, "own copy of theta": _penalty_on_a_copy},
    "flooding-ex-noise": {"accuracy on all noisy labels": _noisy_accuracy, "flips corrected": _flips_corrected,
                          "divided by N": _fitted_over_all_points, "argmax over the points": _argmax_over_points},
}


def test_a_penalised_loss_through_torch_func_is_accepted():
    """∇L by torch.func.grad instead of autograd.grad(create_graph=True): the same objective, differentiable."""
    from kitlib.exercises import check_answer

    def with_func(loss_fn, theta, eps_descent, eps_ascent):
        lam = eps_descent * eps_ascent / (2 * (eps_descent - eps_ascent))
        return loss_fn(theta) + lam * (torch.func.grad(loss_fn)(theta) ** 2).sum()

    assert check_answer("flooding-ex-penalty", with_func)


def test_a_rate_returned_as_a_tensor_is_accepted():
    from kitlib.exercises import check_answer

    def as_tensor(losses, flood_level):
        below = torch.as_tensor(losses) < flood_level
        below = below[int(torch.argmax(below.int())):]
        return (below[1:] != below[:-1]).double().mean()

    assert check_answer("flooding-ex-signs", as_tensor)


def test_a_fraction_from_numpy_arrays_is_accepted():
    """The same statistic computed on NumPy copies, returned as a NumPy float."""
    from kitlib.exercises import check_answer

    def with_numpy(probabilities, noisy_labels, clean_labels):
        predicted = probabilities.numpy().argmax(1)
        noisy, clean = noisy_labels.numpy(), clean_labels.numpy()
        flipped = noisy != clean
        return np.sum(predicted[flipped] == noisy[flipped]) / np.sum(flipped)

    assert check_answer("flooding-ex-noise", with_numpy)


def test_the_hidden_sign_sequences_carry_the_rate_they_were_built_with():
    """The rate counted while building each hidden curve agrees with kitlib's sign_flip_rate (tested on its own
    in tests/test_flooding_arms.py), and the curves cover strict alternation and long runs."""
    from kitlib.exercises.flooding import _loss_sequences
    from kitlib.flooding import sign_flip_rate

    rates = []
    for losses, b, rate in _loss_sequences("flooding-ex-signs"):
        assert rate == sign_flip_rate(losses, b)
        rates.append(rate)
    assert max(rates) == 1.0 and min(rates) < 0.5


def test_the_hidden_noise_sets_cover_none_some_and_all_flips_fitted():
    from kitlib.exercises.flooding import _noisy_predictions

    fractions = [fraction for *_, fraction in _noisy_predictions("flooding-ex-noise")]
    assert 0.0 in fractions and 1.0 in fractions and any(0 < f < 1 for f in fractions)
