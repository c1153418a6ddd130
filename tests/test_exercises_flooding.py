"""Plausible wrong answers to the flooding exercises (tests/test_exercises.py runs each against its check)."""

import math

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


def _entropy_without_k(noise, num_classes):
    """η log η without the K − 1: all the noise on one other class (right only for K = 2)."""
    if noise == 0:
        return 0.0
    return -(1 - noise) * math.log(1 - noise) - noise * math.log(noise)


def _entropy_in_bits(noise, num_classes):
    """Logarithms in base 2."""
    if noise == 0:
        return 0.0
    return -(1 - noise) * math.log2(1 - noise) - noise * math.log2(noise / (num_classes - 1))


def _entropy_nan_at_zero(noise, num_classes):
    """The formula as written, 0 · log 0 left to NumPy: NaN without noise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.float64(noise)
        return float(-(1 - eta) * np.log(1 - eta) - eta * np.log(eta / (num_classes - 1)))


WRONG_ANSWERS = {
    "flooding-ex-adam": {"from the start": _rate_from_the_start, "per step": _rate_per_step,
                         "ascent fraction": _ascent_fraction},
    "flooding-ex-penalty": {"without the half": _penalty_without_half, "detached gradient": _penalty_detached,
                            "norm not squared": _penalty_norm_not_squared},
    "flooding-ex-noise": {"without K - 1": _entropy_without_k, "bits": _entropy_in_bits,
                          "NaN at zero": _entropy_nan_at_zero},
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

    assert check_answer("flooding-ex-adam", as_tensor)
