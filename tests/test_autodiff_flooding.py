"""The flooding equations (kitlib.autodiff, kitlib.flooding, kitlib.flooding_analysis) against independent
computations: explicit Hessians, hand-written gradient steps, finite differences, separate models and closed
forms — and, for each identity the chapter claims, a plausible wrong version that breaks the claim's tolerance."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian
from torch.nn import functional as F

from kitlib.autodiff import (central_difference_gradient, flat_parameters, grad_norm_sq_gradient, gradient,
                             hessian_vector_product)
from kitlib.data import synthetic_split
from kitlib.flooding import (FloodGrid, ascent_fraction, first_crossing, flooded_loss, flooded_step_check,
                             label_noise_entropy)
from kitlib.flooding_analysis import (descent_ascent, flooded_gradient_descent,
                                      gradient_penalty_weight, predicted_displacement, smooth_test_loss,
                                      two_step_relative_error)
from kitlib.models import BatchedMLP, IshidaMLP
from kitlib.train import fit

# The chapter's tolerances (claims F1–F4), so that the wrong versions below are judged by the same bounds.
F1_STEP, F1_VALUE, F2_ERROR, F2_ORDER, F3_ERROR, F4_ERROR = 1e-6, 1e-12, 2e-3, (8, 12), 1e-6, 5e-3


@pytest.fixture
def loss_and_point():
    loss = smooth_test_loss(dim=5, n=40, seed=3)
    theta = 0.5 * torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return loss, theta


def test_central_difference_matches_closed_form_gradient_of_a_quadratic():
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    theta = torch.tensor([0.3, -0.7], dtype=torch.float64)
    fd = central_difference_gradient(lambda t: 0.5 * t @ a @ t, theta)
    torch.testing.assert_close(fd, a @ theta, rtol=1e-9, atol=1e-9)


def test_hessian_vector_product_equals_explicit_hessian_times_vector(loss_and_point):
    loss, theta = loss_and_point
    v = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(hessian_vector_product(loss, theta, v), hessian(loss, theta) @ v)


def test_grad_norm_sq_gradient_is_two_hessian_times_gradient(loss_and_point):
    """Su's identity ∇‖∇L‖² = 2Hg, with H from torch.autograd.functional.hessian."""
    loss, theta = loss_and_point
    expected = 2 * hessian(loss, theta) @ gradient(loss, theta)
    torch.testing.assert_close(grad_norm_sq_gradient(loss, theta), expected)


def test_grad_norm_sq_gradient_matches_finite_differences(loss_and_point):
    """Claim F3: relative error < 1e-6 against central differences (float64)."""
    loss, theta = loss_and_point
    fd = central_difference_gradient(lambda t: (gradient(loss, t) ** 2).sum(), theta)
    exact = grad_norm_sq_gradient(loss, theta)
    assert ((exact - fd).norm() / exact.norm()).item() < 1e-6


def test_grad_norm_sq_gradient_without_the_factor_two_fails_claim_f3(loss_and_point):
    """F3 can fail: Hg (forgetting that ∇‖g‖² = 2Hg) is off by its own size against finite differences
    (the chapter's statistic ‖candidate − fd‖ / ‖candidate‖)."""
    loss, theta = loss_and_point
    fd = central_difference_gradient(lambda t: (gradient(loss, t) ** 2).sum(), theta)
    wrong = hessian_vector_product(loss, theta, gradient(loss, theta))
    error = ((wrong - fd).norm() / wrong.norm()).item()
    assert error == pytest.approx(1.0, rel=1e-4)
    assert error > F3_ERROR


@pytest.fixture
def smooth_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    return net, torch.randn(64, 2, dtype=torch.float64), torch.randint(0, 2, (64,))


def test_flooded_step_check_holds_for_the_flooded_loss_on_both_sides_of_b(smooth_net):
    """Claim F1: the trainer's step on |L − b| + b is −lr × the finite-difference gradient of the piecewise
    objective (L above b, 2b − L below), and the value agrees, on both sides of b."""
    net, x, y = smooth_net
    before = flat_parameters(net)[0].clone()
    for b in (0.01, 5.0):
        check = flooded_step_check(net, x, y, b, lr=0.1)
        assert check["step error"] < F1_STEP and check["value error"] < F1_VALUE
    torch.testing.assert_close(flat_parameters(net)[0], before)  # the model itself is not trained


@pytest.mark.parametrize("wrong, which, size", [
    (lambda L, b: (L - b).abs(), "value error", 5.0),                   # forgot the + b: value off by b
    (lambda L, b: torch.clamp(L, min=b), "step error", 1.0),            # stops at b instead of climbing back
    (lambda L, b: L, "step error", 2.0),                                # no sign flip: plain descent
    (lambda L, b: (L - b).abs().detach() + L - L.detach(), "step error", 2.0),  # sign lost in the backward
])
def test_wrong_flooded_objectives_fail_claim_f1(smooth_net, wrong, which, size):
    """F1 can fail: each plausible wrong version misses the tolerance below b (b = 5 > L ≈ 0.7)."""
    net, x, y = smooth_net
    check = flooded_step_check(net, x, y, 5.0, lr=0.1, objective=wrong)
    assert check[which] == pytest.approx(size, rel=1e-3)
    assert check[which] > (F1_STEP if which == "step error" else F1_VALUE)


def test_flat_parameters_round_trip_through_functional_call(smooth_net):
    net, x, _ = smooth_net
    theta, unflatten = flat_parameters(net)
    assert theta.shape == (sum(p.numel() for p in net.parameters()),)
    torch.testing.assert_close(torch.func.functional_call(net, unflatten(theta), (x,)), net(x))
    shifted = torch.func.functional_call(net, unflatten(theta + 1.0), (x,))
    assert not torch.allclose(shifted, net(x))


def test_flooded_loss_is_elementwise_for_member_vectors():
    losses = torch.tensor([0.1, 0.5, 0.9])
    levels = torch.tensor([0.3, 0.3, 0.0])
    torch.testing.assert_close(flooded_loss(losses, levels), torch.tensor([0.5, 0.5, 0.9]))


def test_descent_ascent_equals_two_hand_written_steps(loss_and_point):
    loss, theta = loss_and_point
    mid = theta - 0.01 * gradient(loss, theta)
    expected = mid + 0.004 * gradient(loss, mid)
    torch.testing.assert_close(descent_ascent(loss, theta, 0.01, 0.004), expected)
    mid = theta + 0.004 * gradient(loss, theta)
    expected = mid - 0.01 * gradient(loss, mid)
    torch.testing.assert_close(descent_ascent(loss, theta, 0.01, 0.004, descent_first=False), expected)


def test_two_step_displacement_is_gradient_descent_on_grad_norm_sq(loss_and_point):
    """Claim F2: relative error of −(ε²/2)∇‖∇L‖² is O(ε) — tenfold smaller per decade."""
    loss, theta = loss_and_point
    direction = grad_norm_sq_gradient(loss, theta)
    errors = []
    for eps in (1e-2, 1e-3):
        predicted = -eps**2 / 2 * direction
        moved = descent_ascent(loss, theta, eps, eps) - theta
        errors.append(((moved - predicted).norm() / predicted.norm()).item())
        assert two_step_relative_error(loss, theta, eps) == pytest.approx(errors[-1], rel=1e-9)
    assert errors[1] < F2_ERROR
    assert F2_ORDER[0] < errors[0] / errors[1] < F2_ORDER[1]


def test_wrong_two_step_predictions_fail_claims_f2_and_f4(loss_and_point):
    """F2, F2-order and F4 can fail: −ε²∇‖∇L‖² (the ½ of 2Hg forgotten), the opposite sign, and λ without
    its ½ miss the tolerances; an O(1) error does not shrink with ε, so the order ratio is about 1."""
    loss, theta = loss_and_point
    direction = grad_norm_sq_gradient(loss, theta)
    for wrong_factor in (-1.0, +0.5):                   # −ε²·∇‖∇L‖² and +(ε²/2)·∇‖∇L‖²
        errors = []
        for eps in (1e-2, 1e-3):
            predicted = -eps**2 / 2 * direction
            moved = descent_ascent(loss, theta, eps, eps) - theta
            wrong = wrong_factor * eps**2 * direction
            errors.append(((moved - wrong).norm() / predicted.norm()).item())
        assert errors[1] > F2_ERROR
        assert not F2_ORDER[0] < errors[0] / errors[1] < F2_ORDER[1]
    e1, e2 = 2e-3, 1e-3
    wrong_lambda = e1 * e2 / (e1 - e2)
    second = descent_ascent(loss, theta, e1, e2) - theta + (e1 - e2) * gradient(loss, theta)
    term = -(e1 - e2) * wrong_lambda * direction
    assert ((second - term).norm() / term.norm()).item() > F4_ERROR


def test_predicted_displacement_and_penalty_weight(loss_and_point):
    """Claim F4: ε₁ > ε₂ gives −(ε₁−ε₂)∇[L + λ‖∇L‖²] with λ = ε₁ε₂/(2(ε₁−ε₂))."""
    loss, theta = loss_and_point
    e1, e2 = 2e-3, 1e-3
    lam = gradient_penalty_weight(e1, e2)
    assert lam == pytest.approx(e1 * e2 / (2 * (e1 - e2)))
    g, h = gradient(loss, theta), hessian(loss, theta)
    expected = -(e1 - e2) * g - e1 * e2 * h @ g
    torch.testing.assert_close(predicted_displacement(loss, theta, e1, e2), expected)
    penalised = -(e1 - e2) * (g + lam * grad_norm_sq_gradient(loss, theta))
    torch.testing.assert_close(expected, penalised)
    moved = descent_ascent(loss, theta, e1, e2) - theta
    second = moved + (e1 - e2) * g
    assert ((second - (penalised + (e1 - e2) * g)).norm() / (e1 * e2 * (h @ g)).norm()).item() < F4_ERROR
    with pytest.raises(ValueError, match="larger"):
        gradient_penalty_weight(1e-3, 1e-3)


def test_label_noise_entropy_equals_entropy_of_the_noisy_label_distribution():
    for noise, k in ((0.1, 2), (0.3, 10), (0.0, 5)):
        q = np.r_[1 - noise, np.full(k - 1, noise / (k - 1))]
        q = q[q > 0]
        assert label_noise_entropy(noise, k) == pytest.approx(-(q * np.log(q)).sum())
    with pytest.raises(ValueError):
        label_noise_entropy(1.0, 2)


def test_first_crossing_and_ascent_fraction():
    losses = np.array([0.9, 0.5, 0.29, 0.31, 0.29, 0.31])
    assert first_crossing(losses, 0.3) == 2
    assert ascent_fraction(losses, 0.3) == pytest.approx(0.5)
    assert first_crossing(losses, 0.1) is None
    assert np.isnan(ascent_fraction(losses, 0.1))


def test_early_stopped_reads_the_metric_at_the_best_validation_epoch():
    val = np.zeros((3, 2, 2))
    val[:, 0, 0] = [50, 70, 60]       # seed 0, level 0: best at evaluation 1
    val[:, 1, 0] = [80, 80, 10]       # seed 1, level 0: tie → first (evaluation 0)
    test = np.arange(12, dtype=float).reshape(3, 2, 2)
    grid = FloodGrid(np.array([0.0, 0.1]), np.zeros((1, 2, 2)), np.array([0, 1, 2]),
                     {"val_acc": val, "test_acc": test}, None)
    assert grid.early_stopped("test_acc", 0).tolist() == [test[1, 0, 0], test[0, 1, 0]]


def test_flooded_gradient_descent_equals_separate_models_trained_by_fit():
    """Each member of the batched run is plain GD on |L − b| + b of its own MLP (checked against IshidaMLP +
    kitlib.train.fit, whose ‖∇L̃‖² is the member's ‖∇L‖²)."""
    torch.manual_seed(0)
    splits = [synthetic_split("sinusoid2d", np.random.default_rng(s), n_train=30, n_test=5) for s in range(2)]
    levels = (0.5, 0.0)
    singles = [IshidaMLP(2, 2, width=8, depth=2, batch_norm=False) for _ in range(4)]
    batched = BatchedMLP(4, 2, 2, width=8, depth=2, batch_norm=False)
    for r, mlp in enumerate(singles):
        batched.load_member(r, mlp)
    trace = flooded_gradient_descent(splits, levels, width=8, depth=2, steps=40, lr=0.5, model=batched,
                                     progress=False)
    assert trace.loss.shape == trace.grad_norm_sq.shape == (40, 2, 2)
    cross_entropy = lambda m, batch: F.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
    for r, mlp in enumerate(singles):
        s, j = divmod(r, 2)
        batch = (splits[s].x_train, splits[s].y_train)
        history = fit(mlp, torch.optim.SGD(mlp.parameters(), lr=0.5), cross_entropy, lambda e: [batch], 40,
                      objective=lambda L: flooded_loss(L, levels[j]), track_grad_norm=True, progress=False)
        np.testing.assert_allclose(trace.loss[:, s, j], history.step_array("loss"), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(trace.grad_norm_sq[:, s, j], history.step_array("grad_norm_sq"), rtol=1e-3,
                                   atol=1e-7)


def test_flooded_gradient_descent_gives_each_split_one_initialisation():
    """A flooded run and its b = 0 twin coincide until the first step whose loss is below b."""
    torch.manual_seed(1)
    splits = [synthetic_split("sinusoid2d", np.random.default_rng(s), n_train=40, n_test=5) for s in range(2)]
    trace = flooded_gradient_descent(splits, (0.3, 0.0), width=16, depth=2, steps=300, lr=0.5, progress=False)
    for s in range(2):
        start = first_crossing(trace.loss[:, s, 0], 0.3)
        assert start is not None and start > 0
        np.testing.assert_array_equal(trace.loss[:start + 1, s, 0], trace.loss[:start + 1, s, 1])
        assert trace.loss[start + 2, s, 0] != trace.loss[start + 2, s, 1]
    assert trace.loss[0, 0, 0] != trace.loss[0, 1, 0]   # different splits, different starts
