"""The flooding equations (kitlib.autodiff, kitlib.flooding) against independent computations:
explicit Hessians, hand-written gradient steps, finite differences and closed forms."""

import numpy as np
import pytest
import torch
from torch.autograd.functional import hessian

from kitlib.autodiff import (central_difference_gradient, grad_norm_sq_gradient, gradient,
                             hessian_vector_product)
from kitlib.flooding import (ascent_fraction, descent_ascent, first_crossing, flooded_loss,
                             gradient_penalty_weight, label_noise_entropy, predicted_displacement,
                             smooth_test_loss)


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


def test_flooded_loss_value_and_gradient_sign():
    """Claim F1 / paper Eq. (1): L̃ = |L − b| + b ≥ b and ∇L̃ = sign(L − b)∇L, exactly."""
    w = torch.tensor([0.3, -1.2], requires_grad=True)
    for b in (0.1, 10.0):
        loss = (w**2).sum()
        (g,) = torch.autograd.grad(loss, w, retain_graph=True)
        flooded = flooded_loss(loss, b)
        (gf,) = torch.autograd.grad(flooded, w)
        assert flooded.item() >= b
        assert flooded.item() == pytest.approx(abs(loss.item() - b) + b)
        assert torch.equal(gf, torch.sign(loss - b) * g)


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
    assert errors[1] < 2e-3
    assert 8 < errors[0] / errors[1] < 12


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
    assert ((second - (penalised + (e1 - e2) * g)).norm() / (e1 * e2 * (h @ g)).norm()).item() < 5e-3
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
