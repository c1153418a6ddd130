"""kitlib.sampling_search against closed forms, scipy densities, Monte Carlo and finite differences."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import multivariate_normal, norm

from kitlib.sampling_search import (
    ball_mean_norm,
    cross_entropy_gradient,
    evolution_strategies,
    gaussian_mixture_log_density,
    mgs_log_proposal,
    mgs_step,
    sampling_search,
    snis_mean,
    snis_weights,
    step_loss_mean_length,
    uniform_ball,
    zero_one_error,
)


def test_snis_mean_of_a_linear_loss_with_gaussian_locality_is_scaled_gradient_descent():
    generator = torch.Generator().manual_seed(0)
    g, sigma, alpha = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64), 0.6, 1.0
    deltas = sigma * torch.randn(200_000, 3, generator=generator, dtype=torch.float64)
    mean, ess = snis_mean(deltas, deltas @ g, alpha)  # q = the locality factor: it cancels
    assert torch.allclose(mean, -sigma**2 * g / alpha, atol=0.01)
    assert ess > 50_000


def test_snis_weight_limits():
    changes = torch.tensor([0.3, -0.2, 0.1, -0.19], dtype=torch.float64)
    log_q = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.allclose(snis_weights(changes, 1e-4), torch.tensor([0, 1, 0, 0], dtype=torch.float64))
    flat = snis_weights(changes, 1e12, log_q)
    assert torch.allclose(flat, torch.exp(-log_q) / torch.exp(-log_q).sum())
    with pytest.raises(ValueError, match="alpha"):
        snis_weights(changes, 0.0)


@pytest.mark.parametrize("alpha", [1e-3, 0.05, 1.0])
def test_ball_mean_norm_against_monte_carlo_and_limits(alpha):
    generator = torch.Generator().manual_seed(1)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    deltas = uniform_ball(400_000, 3, 0.1, generator)
    assert float(deltas.norm(dim=1).max()) <= 0.1 + 1e-12
    mean, _ = snis_mean(deltas, deltas @ g, alpha)
    exact = ball_mean_norm(float(g.norm()), 0.1, alpha, 3)
    assert float(mean.norm()) == pytest.approx(exact, rel=0.03)
    assert float(torch.nn.functional.cosine_similarity(mean, -g, dim=0)) > 0.99
    if alpha == 1e-3:
        assert exact == pytest.approx(0.1, rel=0.02)
    if alpha == 1.0:
        assert exact == pytest.approx(0.1**2 * float(g.norm()) / (5 * alpha), rel=0.02)


def test_mgs_log_proposal_is_a_gaussian_mixture_up_to_a_constant():
    rng = np.random.default_rng(0)
    for dim in (1, 3, 10):
        direction = rng.normal(size=dim)
        deltas = rng.normal(size=(20, dim)) * 1.5
        expected = np.logaddexp(multivariate_normal(np.zeros(dim)).logpdf(deltas),
                                multivariate_normal(direction).logpdf(deltas)) - math.log(2)
        ours = mgs_log_proposal(torch.tensor(deltas), torch.tensor(direction)).numpy()
        np.testing.assert_allclose(ours - expected, dim / 2 * math.log(2 * math.pi), atol=1e-8)
        sigma = 0.7
        mixture = np.logaddexp(multivariate_normal(np.zeros(dim), sigma**2).logpdf(deltas),
                               multivariate_normal(direction, sigma**2).logpdf(deltas)) - math.log(2)
        np.testing.assert_allclose(
            gaussian_mixture_log_density(torch.tensor(deltas), torch.tensor(direction), sigma).numpy(), mixture,
            atol=1e-8)


def test_zero_one_error_and_cross_entropy_gradient():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=generator)
    w = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    for k in range(2):
        predictions = [int(np.argmax(x[i].numpy() @ w[k, :4].numpy() + w[k, 4].numpy())) for i in range(30)]
        assert float(zero_one_error(w, x, y)[k]) == pytest.approx(np.mean(np.array(predictions) != y.numpy()))

    def ce(weights):
        return float(torch.nn.functional.cross_entropy(x @ weights[:4] + weights[4], y))

    grad = cross_entropy_gradient(w[0], x, y)
    step = 1e-6
    for index in [(0, 0), (2, 1), (4, 2)]:
        bumped = w[0].clone()
        bumped[index] += step
        lowered = w[0].clone()
        lowered[index] -= step
        assert float(grad[index]) == pytest.approx((ce(bumped) - ce(lowered)) / (2 * step), rel=1e-5, abs=1e-9)


def test_searches_spend_their_evaluations_and_guidance_helps():
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(3, 5, generator=generator, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (300,), generator=generator)
    x = centres[y] + torch.randn(300, 5, generator=generator, dtype=torch.float64)
    unguided = sampling_search(x, y, 3, 30, 4, sigma=0.1, alpha=0.01, generator=torch.Generator().manual_seed(0))
    guided = sampling_search(x, y, 3, 30, 4, sigma=0.03, alpha=0.01, generator=torch.Generator().manual_seed(0),
                             guide_step=1.0)
    es = evolution_strategies(x, y, 3, 30, 4, sigma=0.1, lr=1.0, generator=torch.Generator().manual_seed(0))
    assert unguided.evaluations[-1] == es.evaluations[-1] == 120
    assert guided.evaluations[-1] == 150  # four 0-1 evaluations and one CE gradient a step
    assert guided.errors[-1] < min(unguided.errors[0], 0.2)
    with pytest.raises(ValueError, match="even"):
        evolution_strategies(x, y, 3, 1, 3, 0.1, 1.0, torch.Generator())


def test_mgs_step_applies_the_weighted_candidates():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    target = torch.randn(16, 2, dtype=torch.float64)

    def mle(m):
        return ((m(x) - target) ** 2).mean()

    def task(m):
        return float((m(x) - target).abs().max().detach())

    before = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    step = mgs_step(model, mle, task, optimiser, candidates=4, beta=5.0, noise=0.5, clip=1e6,
                    generator=torch.Generator().manual_seed(1))
    model_copy = torch.nn.Linear(3, 2).double()
    for k, delta in enumerate(step.deltas):  # each candidate's task loss, recomputed on a separate model
        with torch.no_grad():
            for p, b, d in zip(model_copy.parameters(), before, delta):
                p.copy_(b + d)
        assert float(step.candidate_losses[k]) == pytest.approx(task(model_copy))
    flat = np.stack([torch.cat([d.flatten() for d in delta]).numpy() for delta in step.deltas])
    g = torch.cat([d.flatten() for d in step.direction]).numpy()
    mle_copy = model_copy
    with torch.no_grad():
        for p, b in zip(mle_copy.parameters(), before):
            p.copy_(b)
    mle(mle_copy).backward()
    np.testing.assert_allclose(-np.concatenate([p.grad.flatten().numpy() for p in mle_copy.parameters()]), g)
    log_q = np.logaddexp(multivariate_normal(np.zeros(len(g))).logpdf(flat),
                         multivariate_normal(g).logpdf(flat)) - math.log(2) + len(g) / 2 * math.log(2 * math.pi)
    logits = 5.0 * (step.task_loss - step.candidate_losses.numpy()) - log_q
    np.testing.assert_allclose(step.weights.numpy(), np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum(),
                               atol=1e-10)
    for i, (p, b) in enumerate(zip(model.parameters(), before)):
        expected = b + sum(float(w) * delta[i] for w, delta in zip(step.weights, step.deltas))
        torch.testing.assert_close(p.detach(), expected)


# --- each identity claim of the chapter fails for a plausible wrong implementation ----------------------------
# The tolerances below are the chapter's (O1–O5); each test shows the correct computation inside it and a wrong
# one (sign, missing factor, missing 1/q, wrong sampler, dropped term) outside it.

def _relative_error(estimate, exact):
    return float((estimate - exact).norm() / exact.norm())


def test_O1_gradient_descent_identity_fails_with_a_flipped_sign_or_a_dropped_alpha():
    generator = torch.Generator().manual_seed(0)
    g, sigma, alpha = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64), 0.6, 0.5
    deltas = sigma * torch.randn(400_000, 3, generator=generator, dtype=torch.float64)
    exact = -sigma**2 * g / alpha
    assert _relative_error(snis_mean(deltas, deltas @ g, alpha)[0], exact) <= 0.03
    flipped = snis_weights(-(deltas @ g), alpha) @ deltas  # weights e^{+Δl/α}: ascent
    assert _relative_error(flipped, exact) > 0.03
    assert _relative_error(snis_mean(deltas, deltas @ g, alpha)[0], -sigma**2 * g) > 0.03  # closed form without α


def test_O2_newton_identity_fails_without_dividing_by_the_proposal():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    hessian = a @ a.T / 3 + torch.eye(3, dtype=torch.float64)
    g = torch.tensor([0.4, -0.6, 0.3], dtype=torch.float64)
    newton = -torch.linalg.solve(hessian, g)
    proposal = torch.randn(400_000, 3, generator=generator, dtype=torch.float64)
    log_q = -0.5 * (proposal**2).sum(1)
    quadratic = proposal @ g + 0.5 * ((proposal @ hessian) * proposal).sum(1)
    assert _relative_error(snis_mean(proposal, quadratic, 0.3, log_q)[0], newton) <= 0.03
    forgot_q = snis_mean(proposal, quadratic, 0.3)[0]  # targets −(H + αI)⁻¹g instead
    assert _relative_error(forgot_q, newton) > 0.03
    shrunk = -torch.linalg.solve(hessian + 0.3 * torch.eye(3, dtype=torch.float64), g)
    assert _relative_error(forgot_q, shrunk) <= 0.03


def test_O3_ball_identity_fails_with_a_non_uniform_ball_sampler_or_d_for_d_plus_2():
    generator = torch.Generator().manual_seed(2)
    g, radius, dim = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 0.1, 3
    direction = torch.randn(400_000, dim, generator=generator, dtype=torch.float64)
    direction /= direction.norm(dim=1, keepdim=True)
    wrong_ball = direction * radius * torch.rand(400_000, 1, generator=generator, dtype=torch.float64)  # no U^{1/d}
    right_ball = uniform_ball(400_000, dim, radius, generator)
    gaps = {}
    for name, ball in (("right", right_ball), ("wrong", wrong_ball)):
        gaps[name] = max(abs(float(snis_mean(ball, ball @ g, a)[0].norm())
                             / ball_mean_norm(float(g.norm()), radius, a, dim) - 1) for a in (0.01, 0.1, 1.0))
    assert gaps["right"] <= 0.03 < gaps["wrong"]
    at_30 = ball_mean_norm(float(g.norm()), radius, 30.0, dim)
    assert at_30 / (radius**2 * float(g.norm()) / ((dim + 2) * 30.0)) == pytest.approx(1, abs=1e-3)
    assert at_30 / (radius**2 * float(g.norm()) / (dim * 30.0)) != pytest.approx(1, abs=1e-3)


def test_step_loss_mean_length_against_quadrature():
    """O4's closed form −σ√(2/π)·tanh(1/2α) against ∫u w(u) φ(u) du / ∫w(u) φ(u) du, w = 1 below 0, e^{−1/α} above."""
    for sigma in (0.3, 1.5):
        for alpha in (0.05, 0.4, 3.0, 50.0):
            up = math.exp(-1 / alpha)

            def weight(u):
                return 1.0 if u <= 0 else up

            mass = integrate.quad(lambda u: weight(u) * norm.pdf(u, scale=sigma), -12 * sigma, 12 * sigma,
                                  points=[0.0])[0]
            first = integrate.quad(lambda u: u * weight(u) * norm.pdf(u, scale=sigma), -12 * sigma, 12 * sigma,
                                   points=[0.0])[0]
            assert step_loss_mean_length(sigma, alpha) == pytest.approx(-first / mass, rel=1e-8)
    assert step_loss_mean_length(1.0, 1e-3) == pytest.approx(math.sqrt(2 / math.pi))
    assert step_loss_mean_length(1.0, 1e4) == pytest.approx(1 / (math.sqrt(2 * math.pi) * 1e4), rel=1e-6)
    with pytest.raises(ValueError, match="positive"):
        step_loss_mean_length(1.0, 0.0)


def test_O4_step_loss_identity_fails_with_a_flipped_sign_or_the_half_normal_factor_wrong():
    generator = torch.Generator().manual_seed(3)
    g_hat = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
    g_hat /= g_hat.norm()
    sigma = 0.6
    deltas = sigma * torch.randn(400_000, 3, generator=generator, dtype=torch.float64)
    uphill = (deltas @ g_hat > 0).double()
    right, flipped, factor = [], [], []
    for alpha in (0.1, 0.3, 1.0):
        exact = -step_loss_mean_length(sigma, alpha) * g_hat
        estimate = snis_mean(deltas, uphill, alpha)[0]
        right.append(_relative_error(estimate, exact))
        flipped.append(_relative_error(snis_weights(-uphill, alpha) @ deltas, exact))
        wrong_exact = exact / math.sqrt(2 / math.pi) / math.sqrt(2 * math.pi)  # σ/√(2π) for σ√(2/π)
        factor.append(_relative_error(estimate, wrong_exact))
    assert max(right) <= 0.03
    assert max(flipped) > 0.03 and max(factor) > 0.03


def test_O5_official_proposal_identity_fails_without_the_shift_term_or_the_half():
    rng = np.random.default_rng(4)
    d = 10
    direction = rng.normal(size=d) * 0.5
    deltas = rng.normal(size=(50, d)) + (np.arange(50) % 2 == 0)[:, None] * direction
    reference = (np.logaddexp(multivariate_normal(np.zeros(d)).logpdf(deltas),
                              multivariate_normal(direction).logpdf(deltas))
                 - math.log(2) + d / 2 * math.log(2 * math.pi))
    ours = mgs_log_proposal(torch.tensor(deltas), torch.tensor(direction)).numpy()
    assert np.max(np.abs(ours - reference)) <= 1e-8
    square = -0.5 * (deltas**2).sum(-1)
    no_shift_term = np.logaddexp(square, square + deltas @ direction) - math.log(2)  # dropped −½ g·g
    no_half = np.logaddexp(square, square + deltas @ direction - 0.5 * direction @ direction)  # dropped log ½
    assert np.max(np.abs(no_shift_term - reference)) > 1e-8
    assert np.max(np.abs(no_half - reference)) > 1e-8


# --- the sequence-level task losses of the MGS fine-tuning -------------------------------------------------------


def test_mgs_ablation_components_draw_candidates_from_one_component_only():
    """--zero-dist-only: no candidate carries the guide; --mle-dist-only: every candidate does; the mixture:
    the even ones. Seen through the norms of the first step's candidates (θ = 0, noise negligible)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(50, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=generator)
    guide = cross_entropy_gradient(torch.zeros(5, 3, dtype=torch.float64), x, y)
    guide_norm = float(guide.norm().clamp(max=1.0))  # the centre is −η∇CE clipped to norm 1, η = 1
    for components, expected in (("zero", [0, 0, 0, 0]), ("guided", [1, 1, 1, 1]), ("mixture", [1, 0, 1, 0])):
        norms = []

        def loss(weights):
            norms.append(weights.flatten(1).norm(dim=1))
            return torch.zeros(len(weights), dtype=torch.float64)

        sampling_search(x, y, 3, 1, 4, sigma=1e-9, alpha=0.01, generator=torch.Generator().manual_seed(0),
                        guide_step=1.0, task_loss=loss, components=components)
        assert norms[1].tolist() == pytest.approx([e * guide_norm for e in expected], abs=1e-6)


def test_sampling_search_minimises_a_given_task_loss():
    """A task loss that is 0 only when the bias of class 2 is the largest score: the search must reach it."""
    x = torch.zeros(10, 2, dtype=torch.float64)
    y = torch.full((10,), 2)

    def loss(weights):
        return (weights[:, -1].argmax(-1) != 2).double()

    trace = sampling_search(x, y, 3, 30, 4, sigma=0.5, alpha=0.01, generator=torch.Generator().manual_seed(1),
                            task_loss=loss)
    assert trace.errors[0] == 1.0 and trace.errors[-1] == 0.0
