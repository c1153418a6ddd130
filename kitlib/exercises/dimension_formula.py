"""Exercises of the `dimension-formula` chapter, each verified on hidden inputs against a closed form written
here (the von Mises–Fisher normaliser in Bessel functions) or against kitlib.dimension (tested in
tests/test_dimension_text.py against that closed form, Monte Carlo and the direct double sum)."""

from __future__ import annotations

import math

import torch
from scipy.special import gammaln, ive

from kitlib.dimension import critical_dim, pair_softmax_entropy, sphere_vectors
from kitlib.exercises import Exercise, as_number, expect_close, hidden_generator


def _h_n_bessel(n: float, radius: float) -> float:
    """h_n for vectors of radius r√n: s = κ cos θ with κ = r²n, ν = n/2 − 1, and on the sphere
    E[e^{κ cos θ}] = Γ(ν+1)(2/κ)^ν I_ν(κ), E[cos θ e^{κ cos θ}] / E[e^{κ cos θ}] = I_{ν+1}(κ)/I_ν(κ)."""
    kappa, nu = radius**2 * n, n / 2 - 1
    # ive(ν, κ) underflows to 0 when ν ≫ κ (e.g. r = 0.5, n = 2000); the hidden inputs (n ≤ 512, r ≥ 0.5) stay
    # far from that (ive ≥ 1e-94), and the guard makes any other use fail loudly instead of returning NaN.
    if ive(nu + 1, kappa) == 0:
        raise ValueError(f"the Bessel closed form underflows at n = {n}, r = {radius}")
    log_mean_exp = gammaln(nu + 1) + nu * math.log(2 / kappa) + math.log(ive(nu, kappa)) + kappa
    return float(log_mean_exp - kappa * ive(nu + 1, kappa) / ive(nu, kappa))


def _verify_temperature(answer) -> None:
    g = hidden_generator("dimension-ex-temperature")
    for n in (5, 16, 64, 200, 512):
        radius = float(0.5 + 1.3 * torch.rand((), generator=g))
        got = as_number(answer(n, radius), "h_n")
        expect_close(got, _h_n_bessel(n, radius), rtol=1e-6, atol=1e-9,
                     what=f"h_n at n = {n} and a hidden radius factor r")
    got = as_number(answer(64, 1.0), "h_n")
    expect_close(got, _h_n_bessel(64, 1.0), rtol=1e-6, what="h_n at n = 64 and r = 1 (the chapter's h_n)")


def _verify_heads(answer) -> None:
    g = hidden_generator("dimension-ex-heads")
    for low, high in ((64, 500), (1000, 20000)):
        length = int(low + (high - low) * float(torch.rand((), generator=g)))
        got = as_number(answer(length), "the head size")
        expect_close(got, critical_dim(length), rtol=2e-6, atol=1e-4,
                     what=f"the critical head size for a hidden sequence length between {low} and {high}")


def _verify_entropy(answer) -> None:
    g = hidden_generator("dimension-ex-entropy")
    for count_u, count_v, n in ((40, 40, 4), (150, 150, 12), (90, 60, 30), (300, 300, 48), (60, 60, 720)):
        u = sphere_vectors(count_u, n, g)
        # the last case pairs the table with itself: the self pairs have s = n = 720 and e^s overflows float64
        v = u if n == 720 else sphere_vectors(count_v, n, g)
        got = as_number(answer(u.clone(), v.clone()), "the entropy")
        expect_close(got, pair_softmax_entropy(u, v), rtol=1e-9, atol=1e-12,
                     what=f"the entropy of a hidden {count_u} × {count_v} pair softmax in dimension {n}")


EXERCISES = [
    Exercise(
        label="dimension-ex-temperature", chapter="dimension-formula", function="h_n_temperature",
        asks="Write h_n for vectors of radius r√n (a temperature r²) by integrating over the angle.",
        expected="log E[e^s] − E[s e^s]/E[e^s] with s = r² n cos θ and θ distributed as sin^{n−2} θ on (0, π), "
                 "accurate to six significant digits (r = 1 gives the chapter's h_n)",
        minutes=25, prerequisites="section 1 (C1-09, C1-02); `h_n`", verify=_verify_temperature),
    Exercise(
        label="dimension-ex-heads", chapter="dimension-formula", function="critical_head_size",
        asks="Write the head size the formula gives for a sequence length L: the root of 2 log L + h_n = 0.",
        expected="the real n at which 2 log L + h_n changes sign (natural logarithms, h_n from kitlib), found by "
                 "bisection or a root finder to four decimals, not the linear rule 8.33 log L",
        minutes=15, prerequisites="section 2 (C1-04, the post's head-size application); `h_n` (section 1)",
        verify=_verify_heads),
    Exercise(
        label="dimension-ex-entropy", chapter="dimension-formula", function="pair_entropy",
        asks="Write the exact entropy of the softmax over all pairs of two tables of vectors (section 3).",
        expected="H = log Z − Σ p_ij s_ij over all N_u × N_v pairs, with s_ij = ⟨u_i, v_j⟩ and p_ij = e^{s_ij}/Z "
                 "(one softmax over every pair, not one per row), in nats, finite where e^s overflows",
        minutes=10, prerequisites="sections 1 and 3 (the skip-gram softmax over all pairs, C1-06)",
        verify=_verify_entropy),
]
