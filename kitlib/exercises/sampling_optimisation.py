"""Exercises of the `sampling-optimisation` chapter, each verified on hidden inputs against a closed form written
here (the SNIS weights and their effective sample size, in float64 numpy with the largest exponent subtracted),
kitlib.sampling_search (``snis_weights`` and ``mgs_log_proposal``, tested against scipy's Gaussian densities in
tests/test_sampling_search.py) and scipy's one-dimensional ``norm.logpdf`` (a diagonal Gaussian is a product
of one-dimensional ones)."""

from __future__ import annotations

import math

import numpy as np
import torch

from kitlib.exercises import Exercise, WrongAnswer, as_number, expect_close, hidden_generator
from kitlib.sampling_search import mgs_log_proposal, snis_weights


def _snis_reference(deltas: torch.Tensor, loss_changes: torch.Tensor, alpha: float, log_q: torch.Tensor):
    """The SNIS mean and 1/Σw̃² from the closed form, in numpy (independent of kitlib)."""
    logits = -loss_changes.numpy() / alpha - log_q.numpy()
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    return weights @ deltas.numpy(), 1.0 / float((weights**2).sum())


def _verify_snis(answer) -> None:
    g = hidden_generator("sampling-ex-newton-alpha")
    # the offset is l(θ) − l(θ'), a constant that cancels in the weights. The first three α spread the weight
    # (an ESS from several to hundreds): they decide the ESS, and a missing or inverted 1/q shows in the mean.
    # At α = 0.01 (the last two) the offset sends every exp(−Δl/α) far outside float64's range, so only a
    # stable computation survives; there one sample carries nearly all the weight (ESS about one), which tests
    # the stability of the mean, not the weights' form
    for count, dim, alpha, offset in ((1000, 3, 0.3, 2.0), (2000, 2, 1.0, 0.0), (800, 5, 10.0, -5.0),
                                      (400, 3, 0.01, -12.0), (300, 4, 0.01, 9.0)):
        a_matrix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
        hessian = a_matrix @ a_matrix.T / dim + torch.eye(dim, dtype=torch.float64)
        gradient = torch.randn(dim, generator=g, dtype=torch.float64)
        deltas = torch.randn(count, dim, generator=g, dtype=torch.float64)
        log_q = -0.5 * (deltas**2).sum(1)  # the proposal N(0, I), up to a constant
        loss_changes = offset + 3.0 * (deltas @ gradient + 0.5 * ((deltas @ hessian) * deltas).sum(1))
        got = answer(deltas.clone(), loss_changes.clone(), alpha, log_q.clone())
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise WrongAnswer("the answer should be a pair (mean, effective sample size)")
        mean, ess = _snis_reference(deltas, loss_changes, alpha, log_q)
        what = f"{count} hidden samples in {dim} dimensions at a hidden α"
        expect_close(got[0], mean, rtol=1e-8, atol=1e-12, what=f"the SNIS mean of {what}")
        expect_close(as_number(got[1], "the effective sample size"), ess, rtol=1e-8, what=f"the effective sample size of {what}")


def _verify_mgs_update(answer) -> None:
    g = hidden_generator("sampling-ex-unguided-mgs")
    for count, dim, sigma, beta, guide in ((4, 10, 0.1, 100.0, 1.0), (6, 40, 0.3, 1.0, 0.8),
                                           (4, 650, 0.03, 100.0, 1.0), (8, 5, 1.0, 10.0, 2.0),
                                           (4, 30, 0.1, 100.0, 0.0)):
        direction = torch.randn(dim, generator=g, dtype=torch.float64)
        direction *= guide / max(float(direction.norm()), 1e-12)  # the last case: no guide at all
        guided = (torch.arange(count) % 2 == 0).double()[:, None]
        deltas = sigma * torch.randn(count, dim, generator=g, dtype=torch.float64) + guided * direction
        current = float(torch.rand((), generator=g, dtype=torch.float64))
        task_losses = (current + 0.05 * torch.randn(count, generator=g, dtype=torch.float64)).clamp(0, 1)
        got = answer(deltas.clone(), task_losses.clone(), current, direction.clone(), beta)
        weights = snis_weights(task_losses - current, 1 / beta, mgs_log_proposal(deltas, direction))
        expect_close(got, weights @ deltas, rtol=1e-8, atol=1e-12,
                     what=f"the update from {count} hidden candidates in {dim} dimensions (hidden β and guide)")


def _verify_mixture_density(answer) -> None:
    from scipy.stats import norm  # imported here: only this check needs it (the chapter has it loaded already)

    g = hidden_generator("sampling-ex-true-density")
    for count, dim, sigma in ((20, 1, 0.7), (20, 3, 1.3), (30, 10, 0.2), (10, 650, 0.03)):
        centre = torch.randn(dim, generator=g, dtype=torch.float64) * 2 * sigma
        guided = (torch.arange(count) % 2 == 0).double()[:, None]
        deltas = sigma * torch.randn(count, dim, generator=g, dtype=torch.float64) + guided * centre
        got = answer(deltas.clone(), centre.clone(), sigma)
        d, c = deltas.numpy(), centre.numpy()
        # N(0, σ²I) and N(μ, σ²I) as products of d one-dimensional densities, mixed in log space
        want = np.logaddexp(norm.logpdf(d, 0.0, sigma).sum(1), norm.logpdf(d, c, sigma).sum(1)) - math.log(2)
        # errors in a log-density are absolute: an answer with float32 parameters (torch.distributions.Normal
        # built from Python floats) is right; the rtol covers the sum over 650 dimensions
        expect_close(got, want, rtol=1e-6, atol=1e-5,
                     what=f"the log-density of {count} hidden candidates in {dim} dimensions (hidden σ)")


EXERCISES = [
    Exercise(
        label="sampling-ex-newton-alpha", chapter="sampling-optimisation", function="snis_mean_and_ess",
        asks="Write the self-normalised importance-sampling mean of the updates and its effective sample size.",
        expected="weights w̃_i ∝ exp(−Δl_i/α − log q_i) normalised to sum to 1 (computed stably, e.g. with the "
                 "largest exponent subtracted, since α can be small), the mean Σ w̃_i Δθ_i (d,) and the effective "
                 "sample size 1/Σ w̃_i², returned as a pair",
        minutes=15, prerequisites="sections 2–4 (O1, O2)", verify=_verify_snis),
    Exercise(
        label="sampling-ex-unguided-mgs", chapter="sampling-optimisation", function="mgs_update",
        asks="Write one MGS update from candidates, their task losses, the current loss, the guide and β, with "
             "the official proposal density.",
        expected="Σ w̃_k Δ_k with w̃_k ∝ exp(−β(C_k − C) − log q_k), where log q_k = log(½e^{−½Δ_k·Δ_k} + "
                 "½e^{−½Δ_k·Δ_k + Δ_k·g − ½g·g}) is the official formula (unit variance, no normalising constant)",
        minutes=20, prerequisites="section 4 (O5), section 5",
        verify=_verify_mgs_update),
    Exercise(
        label="sampling-ex-true-density", chapter="sampling-optimisation", function="mixture_log_density",
        asks="Write the true log-density of the MGS proposal ½N(0, σ²I) + ½N(μ, σ²I), normalising constant "
             "included.",
        expected="for each candidate, log(½N(Δ; 0, σ²I) + ½N(Δ; μ, σ²I)) with both Gaussian normalising "
                 "constants (2πσ²)^{−d/2}, computed in log space (in 650 dimensions the density itself "
                 "overflows)",
        minutes=15, prerequisites="section 4 (O5); section 5 (`official_density=False`)",
        verify=_verify_mixture_density),
]
