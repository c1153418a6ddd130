"""Plausible wrong answers to the performer exercises (tests/test_exercises.py runs each against its check), and
tests of the checks' own references."""

import numpy as np
import pytest
import torch
from scipy.special import roots_jacobi
from scipy.stats import chi


# -- performer-ex-variance --------------------------------------------------------------------------------------
def _second_moment(q, k, m, kind):
    """E[Y²]/SM² instead of Var Y/SM²: the −1 of the positive form forgotten (trig form right)."""
    if kind == "positive":
        return torch.exp(((q + k) ** 2).sum(-1)) / m
    return 2 * torch.sinh(((q - k) ** 2).sum(-1) / 2) ** 2 / m


def _trig_without_two(q, k, m, kind):
    """Lemma 2's 1/(2m) read as 1/m times sinh² without the factor 2 lost: sinh²(‖q−k‖²/2)/m."""
    if kind == "positive":
        return torch.expm1(((q + k) ** 2).sum(-1)) / m
    return torch.sinh(((q - k) ** 2).sum(-1) / 2) ** 2 / m


def _absolute_mse(q, k, m, kind):
    """The MSE itself, not divided by SM² = e^{2q·k}."""
    sm2 = torch.exp(2 * (q * k).sum(-1))
    if kind == "positive":
        return sm2 * torch.expm1(((q + k) ** 2).sum(-1)) / m
    return sm2 * 2 * torch.sinh(((q - k) ** 2).sum(-1) / 2) ** 2 / m


def _kinds_swapped(q, k, m, kind):
    """‖q − k‖ in the positive form and ‖q + k‖ in the trigonometric one."""
    if kind == "positive":
        return torch.expm1(((q - k) ** 2).sum(-1)) / m
    return 2 * torch.sinh(((q + k) ** 2).sum(-1) / 2) ** 2 / m


# -- performer-ex-midpoint --------------------------------------------------------------------------------------
def _bias(r, m, d, levels):
    radii = chi.ppf(levels, d)
    t, w = roots_jacobi(80, (d - 3) / 2, (d - 3) / 2)
    w = w / w.sum()
    return float((w * np.exp(np.outer(radii * r, t) - r**2 / 2)).sum(-1).mean() - 1)


def _levels_over_m(r, m, d, rule):
    """Levels i/m for Su's rule: the last radius is the quantile at 1, infinite."""
    i = np.arange(1, m + 1)
    return _bias(r, m, d, i / m if rule == "su" else (i - 0.5) / m)


def _rule_ignored(r, m, d, rule):
    """Su's levels i/(m+1) whatever the rule."""
    return _bias(r, m, d, np.arange(1, m + 1) / (m + 1))


def _one_dimensional(r, m, d, rule):
    """The radius along s taken as the whole of ω·s (u₁ = 1, as if ω were parallel to q + k)."""
    i = np.arange(1, m + 1)
    radii = chi.ppf(i / (m + 1) if rule == "su" else (i - 0.5) / m, d)
    return float(np.exp(radii * r - r**2 / 2).mean() - 1)


def _unbiased(r, m, d, rule):
    """0: the random-radius estimator's bias, as if fixed radii changed nothing."""
    return 0.0


# -- performer-ex-rnn -------------------------------------------------------------------------------------------
def _read_before_update(phi_q, phi_k, v):
    """The state read before key i is added: row i sees keys j < i only (row 0 divides 0 by 0)."""
    state = phi_k.new_zeros(phi_k.shape[1], v.shape[1])
    normaliser = phi_k.new_zeros(phi_k.shape[1])
    rows = []
    for i in range(phi_q.shape[0]):
        rows.append(phi_q[i] @ state / (phi_q[i] @ normaliser))
        state = state + torch.outer(phi_k[i], v[i])
        normaliser = normaliser + phi_k[i]
    return torch.stack(rows)


def _not_causal(phi_q, phi_k, v):
    """The bidirectional form φ(Q)(φ(K)ᵀV) / φ(Q)φ(K)ᵀ1: every row sees every key."""
    return (phi_q @ (phi_k.T @ v)) / (phi_q @ phi_k.sum(0)).unsqueeze(-1)


def _no_normaliser(phi_q, phi_k, v):
    """φ(q_i)ᵀS_i without dividing by φ(q_i)ᵀz_i."""
    return torch.stack([phi_q[i] @ (phi_k[:i + 1].T @ v[:i + 1]) for i in range(phi_q.shape[0])])


WRONG_ANSWERS = {
    "performer-ex-variance": {"second moment": _second_moment, "trig without 2": _trig_without_two,
                              "not relative": _absolute_mse, "norms swapped": _kinds_swapped},
    "performer-ex-midpoint": {"levels i/m": _levels_over_m, "rule ignored": _rule_ignored,
                              "one-dimensional": _one_dimensional, "unbiased": _unbiased},
    "performer-ex-rnn": {"read before update": _read_before_update, "not causal": _not_causal,
                         "no normaliser": _no_normaliser},
}


def test_quantile_bias_closed_form_matches_monte_carlo_of_orthogonal_quantile():
    """The check's reference against kitlib's sampler: the mean of many estimates with Su's radii, in standard
    errors, at ‖q‖ = ‖k‖ = 1, cos = 0.5 (d = 16, m = 64)."""
    from kitlib.attention import kernel_estimates, pairs_with_cosine
    from kitlib.exercises.performer import quantile_mean_closed_form

    g = torch.Generator().manual_seed(3)
    x, y = pairs_with_cosine(16, [0.5], 1, 1.0, g)
    estimate = kernel_estimates(x, y, 64, 40_000, kinds=("positive",), sampler="quantile", generator=g)["positive"]
    relative = (estimate / torch.exp((x * y).sum(-1))).flatten() - 1
    want = quantile_mean_closed_form(float((x + y).norm()), 64, 16, "su")
    assert want < -1e-3                                  # a real, downward bias
    assert abs(float(relative.mean()) - want) < 4 * float(relative.std()) / len(relative) ** 0.5


def test_quantile_bias_closed_form_vanishes_with_random_radii_in_the_limit():
    """Averaging the Bessel form over many quantiles approaches the χ_d average, whose bias is 0 (PF1)."""
    from kitlib.exercises.performer import quantile_mean_closed_form

    assert abs(quantile_mean_closed_form(1.2, 20_000, 8, "midpoint")) < 1e-4


def test_a_monte_carlo_answer_of_the_bias_is_not_accepted_as_exact():
    """The exercise asks for the exact bias; 20 000 sampled directions miss the tolerance."""
    from kitlib.exercises import WrongAnswer, check_answer

    def sampled(r, m, d, rule):
        g = torch.Generator().manual_seed(0)
        i = np.arange(1, m + 1)
        radii = torch.as_tensor(chi.ppf(i / (m + 1) if rule == "su" else (i - 0.5) / m, d))
        u = torch.randn(2000, m, d, generator=g, dtype=torch.float64)
        u1 = u[..., 0] / u.norm(dim=-1)
        return float(torch.exp(radii * r * u1 - r**2 / 2).mean() - 1)

    with pytest.raises(WrongAnswer):
        check_answer("performer-ex-midpoint", sampled)
