"""Plausible wrong answers to the dimension-formula exercises (tests/test_exercises.py runs each against its check)."""

import math

import numpy as np
import torch
from scipy.special import logsumexp

from kitlib.dimension import h_n


def _h_n_variant(n, r, power_offset=0, coupling=None):
    theta = np.linspace(0.0, np.pi, 20_001)[1:-1]
    log_density = (n - 2 + power_offset) * np.log(np.sin(theta))
    s = (r**2 if coupling is None else coupling) * n * np.cos(theta)
    log_tilted = log_density + s
    tilted = np.exp(log_tilted - logsumexp(log_tilted))
    return float(logsumexp(log_tilted) - logsumexp(log_density) - (tilted * s).sum())


def _temperature_radius_once(n, r):
    """s = r n cos θ: the radius of one vector instead of the product of the two radii, r²."""
    return _h_n_variant(n, r, coupling=r)


def _temperature_wrong_power(n, r):
    """Density sin^{n−1} θ instead of sin^{n−2} θ (the area element of the sphere has n − 2)."""
    return _h_n_variant(n, r, power_offset=1)


def _temperature_ignored(n, r):
    """r ignored: the chapter's h_n whatever the radius."""
    return h_n(n)


def _coarse_grid(n, r):
    """A grid of 50 angles: the integral is not accurate to six digits at large n r²."""
    theta = np.linspace(0.0, np.pi, 52)[1:-1]
    log_density = (n - 2) * np.log(np.sin(theta))
    s = r**2 * n * np.cos(theta)
    log_tilted = log_density + s
    tilted = np.exp(log_tilted - logsumexp(log_tilted))
    return float(logsumexp(log_tilted) - logsumexp(log_density) - (tilted * s).sum())


def _bisect(f, low=2.0, high=None):
    while high - low > 1e-7:
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) > 0 else (low, mid)
    return (low + high) / 2


def _heads_linear_rule(seq_len):
    """The post's linear rule 8.33 log L instead of the root."""
    return 8.33 * math.log(seq_len)


def _heads_one_log(seq_len):
    """The root of log L + h_n: one table of N vectors instead of N² pairs."""
    return _bisect(lambda n: math.log(seq_len) + h_n(n), 2.0, 20 * math.log(seq_len) + 50)


def _heads_bits(seq_len):
    """The root of 2 log₂ L + h_n: the length's logarithm in bits, h_n in nats."""
    return _bisect(lambda n: 2 * math.log2(seq_len) + h_n(n), 2.0, 40 * math.log(seq_len) + 50)


def _heads_rounded_up(seq_len):
    """The smallest integer head size past the root instead of the root itself."""
    return float(math.ceil(_bisect(lambda n: 2 * math.log(seq_len) + h_n(n), 2.0, 20 * math.log(seq_len) + 50)))


def _entropy_per_row(u, v):
    """One softmax per row: the mean of the N_u row entropies instead of the joint softmax over all pairs."""
    log_p = torch.log_softmax(u @ v.T, dim=1)
    return float(-(log_p.exp() * log_p).sum(1).mean())


def _entropy_unweighted(u, v):
    """log Z minus the plain mean of s instead of its softmax-weighted mean."""
    s = (u @ v.T).flatten()
    return float(torch.logsumexp(s, dim=0) - s.mean())


def _entropy_bits(u, v):
    """Entropy in bits."""
    s = (u @ v.T).flatten()
    log_p = s - torch.logsumexp(s, dim=0)
    return float(-(log_p.exp() * log_p).sum() / math.log(2))


def _entropy_naive_exp(u, v):
    """p = e^s / Σ e^s without subtracting the maximum: NaN once some s exceeds log(float64 max) ≈ 709.8."""
    e = torch.exp((u @ v.T).flatten())
    p = e / e.sum()
    return float(-(p * torch.log(p)).sum())


WRONG_ANSWERS = {
    "dimension-ex-temperature": {"r instead of r squared": _temperature_radius_once,
                                 "sin^(n-1)": _temperature_wrong_power, "r ignored": _temperature_ignored,
                                 "coarse grid": _coarse_grid},
    "dimension-ex-heads": {"8.33 log L": _heads_linear_rule, "log L, not 2 log L": _heads_one_log,
                           "bits": _heads_bits, "rounded up": _heads_rounded_up},
    "dimension-ex-entropy": {"per row": _entropy_per_row, "unweighted mean": _entropy_unweighted,
                             "bits": _entropy_bits, "naive exp": _entropy_naive_exp},
}


def test_an_entropy_from_the_probabilities_is_accepted():
    """−Σ p log p with p the joint softmax: the same H written the other way."""
    from kitlib.exercises import check_answer

    def from_probabilities(u, v):
        log_p = torch.log_softmax((u @ v.T).flatten(), dim=0)
        return -(log_p.exp() * log_p).sum()

    assert check_answer("dimension-ex-entropy", from_probabilities)


def test_a_head_size_from_brentq_on_a_scipy_quadrature_is_accepted():
    """The root through scipy's brentq with h_n by adaptive quadrature of the density (not kitlib's grid)."""
    from scipy.integrate import quad
    from scipy.optimize import brentq

    from kitlib.exercises import check_answer

    def h_quad(n):
        peak = (n - 2) * math.log(math.sin(math.acos((math.sqrt(5) - 1) / 2))) + n * (math.sqrt(5) - 1) / 2
        base = quad(lambda t: math.sin(t) ** (n - 2), 0, math.pi, epsabs=0, epsrel=1e-12, limit=200)[0]
        tilt = lambda t: math.exp((n - 2) * math.log(math.sin(t)) + n * math.cos(t) - peak)  # noqa: E731
        mass = quad(tilt, 0, math.pi, epsabs=0, epsrel=1e-12, limit=200)[0]
        first = quad(lambda t: n * math.cos(t) * tilt(t), 0, math.pi, epsabs=0, epsrel=1e-12, limit=200)[0]
        return math.log(mass) + peak - math.log(base) - first / mass

    def critical_head_size(seq_len):
        return brentq(lambda n: 2 * math.log(seq_len) + h_quad(n), 2.0, 20 * math.log(seq_len) + 50, xtol=1e-8)

    assert check_answer("dimension-ex-heads", critical_head_size)


def test_the_naive_exp_fails_only_on_the_overflowing_case():
    """The naive softmax is right on the first four hidden tables; only the self-paired n = 720 case rejects it."""
    import pytest

    from kitlib.exercises import WrongAnswer, get_exercise

    seen = []

    def naive_logging(u, v):
        seen.append(u.shape[1])
        return _entropy_naive_exp(u, v)

    with pytest.raises(WrongAnswer, match="NaN or infinite"):
        get_exercise("dimension-ex-entropy").verify(naive_logging)
    assert seen == [4, 12, 30, 48, 720]
