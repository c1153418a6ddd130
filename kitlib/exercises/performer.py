"""Exercises of the `performer` chapter, each verified on hidden inputs against an independent computation:
Lemma 2 as kitlib.attention.softmax_kernel_mse (tested against Gauss–Hermite quadrature and Monte Carlo in
tests/test_attention.py), the mean of the quantile-radius estimator in closed form (a modified Bessel function,
checked against Monte Carlo of kitlib.attention.orthogonal_quantile in tests/test_exercises_performer.py), and
causal linear attention as the explicit masked n×n matrix."""

from __future__ import annotations

import numpy as np
import torch
from scipy import special
from scipy.stats import chi

from kitlib.attention import chi_quantile_radii, softmax_kernel_mse
from kitlib.exercises import Exercise, WrongAnswer, expect_close, hidden_generator


def _as_tensor(got, what: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise WrongAnswer(f"{what} should be a torch tensor, got {type(got).__name__}")
    return got


# -- performer-ex-variance --------------------------------------------------------------------------------------
def _pairs(label: str):
    """Hidden (q, k) batches, float64: shapes (5,), (3, 4) and (6,) of vectors in d = 4, 16, 64, norms in
    [0.3, 1.5] and random directions."""
    g = hidden_generator(label)
    for shape, d in (((5,), 4), ((3, 4), 16), ((6,), 64)):
        q, k = (torch.randn(*shape, d, generator=g, dtype=torch.float64) for _ in range(2))
        q = q / q.norm(dim=-1, keepdim=True) * (0.3 + 1.2 * torch.rand(*shape, 1, generator=g, dtype=torch.float64))
        k = k / k.norm(dim=-1, keepdim=True) * (0.3 + 1.2 * torch.rand(*shape, 1, generator=g, dtype=torch.float64))
        m = int(torch.randint(8, 200, (), generator=g))
        yield q, k, m


def _verify_variance(answer) -> None:
    for q, k, m in _pairs("performer-ex-variance"):
        for kind in ("positive", "trig"):
            want = softmax_kernel_mse(q, k, m, kind) / torch.exp(2 * (q * k).sum(-1))
            got = _as_tensor(answer(q.clone(), k.clone(), m, kind), "the relative MSE")
            expect_close(got, want, rtol=1e-8, atol=0.0,
                         what=f"the relative MSE of {kind} features (m = {m}, d = {q.shape[-1]}, "
                              f"{tuple(q.shape[:-1])} hidden pairs)")


# -- performer-ex-midpoint --------------------------------------------------------------------------------------
def quantile_mean_closed_form(norm_s: float, m: int, d: int, rule: str) -> float:
    """E[φ(q)·φ(k)] / e^{q·k} − 1 for positive features with rows ω_i = R_i u_i, u_i uniform on the unit sphere
    (orthogonal within blocks or not: each row alone is uniform) and fixed radii R_i, the χ_d quantiles at
    i/(m+1) ("su") or (i − ½)/m ("midpoint"), for ‖q + k‖ = ``norm_s``.

    E_u[e^{t u·e}] = Γ(d/2) (2/t)^{d/2−1} I_{d/2−1}(t) (the moment-generating function of one coordinate of a
    uniform unit vector), so the mean is (1/m) Σ_i Γ(d/2)(2/(R_i r))^ν I_ν(R_i r) e^{−r²/2}, ν = d/2 − 1;
    computed in logs with the exponentially scaled Bessel function ``ive``."""
    levels = np.arange(1, m + 1) / (m + 1) if rule == "su" else (np.arange(1, m + 1) - 0.5) / m
    radii = chi_quantile_radii(m, d).numpy() if rule == "su" else chi.ppf(levels, d)
    t = radii * norm_s
    nu = d / 2 - 1
    log_mgf = special.gammaln(d / 2) + nu * np.log(2 / t) + np.log(special.ive(nu, t)) + t
    return float(np.mean(np.exp(log_mgf - norm_s**2 / 2)) - 1)


def _bias_cases(label: str):
    """Hidden (‖q + k‖, m, d, rule): ‖q + k‖ in [0.5, 2.5], m and d of the chapter's size, both rules."""
    g = hidden_generator(label)
    for m, d in ((16, 4), (64, 16), (100, 16), (48, 64)):
        r = float(0.5 + 2 * torch.rand((), generator=g, dtype=torch.float64))
        for rule in ("su", "midpoint"):
            yield r, m, d, rule


def _verify_midpoint(answer) -> None:
    for r, m, d, rule in _bias_cases("performer-ex-midpoint"):
        got = answer(r, m, d, rule)
        if isinstance(got, torch.Tensor):
            got = got.detach()
        expect_close(got, quantile_mean_closed_form(r, m, d, rule), rtol=1e-6, atol=1e-12,
                     what=f"the relative bias ({rule} radii, m = {m}, d = {d}, a hidden ‖q + k‖)")


# -- performer-ex-rnn -------------------------------------------------------------------------------------------
def _sequences(label: str):
    """Hidden positive features φ(Q), φ(K) (n, m) and values V (n, d_v), float64, n from 1 to 40."""
    g = hidden_generator(label)
    for n, m, dv in ((1, 3, 2), (7, 4, 3), (40, 16, 5), (25, 2, 1)):
        phi_q = torch.exp(torch.randn(n, m, generator=g, dtype=torch.float64))
        phi_k = torch.exp(torch.randn(n, m, generator=g, dtype=torch.float64))
        v = torch.randn(n, dv, generator=g, dtype=torch.float64)
        yield phi_q, phi_k, v


def _verify_rnn(answer) -> None:
    for phi_q, phi_k, v in _sequences("performer-ex-rnn"):
        scores = torch.tril(phi_q @ phi_k.T)                      # the explicit masked n×n matrix
        want = (scores / scores.sum(-1, keepdim=True)) @ v
        got = _as_tensor(answer(phi_q.clone(), phi_k.clone(), v.clone()), "the attention output")
        n, m = phi_q.shape
        expect_close(got, want, rtol=1e-9, atol=1e-12,
                     what=f"the causal attention output (n = {n}, m = {m}, d_v = {v.shape[1]})")


EXERCISES = [
    Exercise(
        label="performer-ex-variance", chapter="performer", function="relative_mse",
        asks="Write the relative MSE of the positive and the trigonometric random-feature estimates of e^(q·k) "
             "with m i.i.d. features (Lemma 2 divided by SM²).",
        expected="for each pair, the MSE of Lemma 2 divided by the squared kernel e^{2q·k}: for positive features "
                 "a function of ‖q + k‖ alone, for trigonometric ones of ‖q − k‖ alone, each zero where its norm is "
                 "zero and falling as 1/m; a tensor of the batch shape",
        minutes=15, prerequisites="sections 1–2 (PF1, PF2; the paper's Lemma 2); `favor_features`",
        verify=_verify_variance),
    Exercise(
        label="performer-ex-midpoint", chapter="performer", function="quantile_bias",
        asks="Compute exactly the relative bias of positive features whose radii are fixed χ_d quantiles, for "
             "Su's levels i/(m+1) and the midpoints (i − ½)/m.",
        expected="the exact relative bias, as a float, of the positive-feature estimate of e^{q·k} whose m radii "
                 "are fixed χ_d quantiles at levels i/(m+1) (rule 'su') or (i − ½)/m (rule 'midpoint') and whose "
                 "directions are uniform on the sphere, computed exactly (quadrature or a Bessel function), not by "
                 "sampling",
        minutes=45, prerequisites="sections 1 and 3 (PF1, PF5); `chi_quantile_radii`, `orthogonal_quantile`",
        verify=_verify_midpoint),
    Exercise(
        label="performer-ex-rnn", chapter="performer", function="causal_linear_attention",
        asks="Write causal linear attention as a recurrence over positions with the state (S, z).",
        expected="row i equal to φ(q_i)ᵀS_i / φ(q_i)ᵀz_i with S_i = Σ_{j≤i} φ(k_j)v_jᵀ and z_i = Σ_{j≤i} φ(k_j) "
                 "(key i included, later keys excluded), as an (n, d_v) tensor",
        minutes=15, prerequisites="sections 1 and 5 (LA1–LA3)", verify=_verify_rnn),
]
