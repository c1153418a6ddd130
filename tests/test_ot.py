"""kitlib.ot.exact_w1 against an optimal assignment, a HiGHS linear programme and finite differences."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment, linprog
from scipy.spatial.distance import cdist

from kitlib.ot import c_transform_value, exact_w1


def w1_by_linprog(x, y):
    """The transport LP written out: variables γ_ij ≥ 0, row sums 1/m, column sums 1/n."""
    m, n = len(x), len(y)
    cost = cdist(x, y).ravel()
    rows = np.kron(np.eye(m), np.ones(n))
    cols = np.kron(np.ones(m), np.eye(n))
    constraints = np.vstack([rows, cols])
    sums = np.concatenate([np.full(m, 1 / m), np.full(n, 1 / n)])
    result = linprog(cost, A_eq=constraints, b_eq=sums, bounds=(0, None), method="highs")
    assert result.success
    return result.fun


def test_equal_sizes_match_the_optimal_assignment_and_the_lp():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) + 0.5
    cost = cdist(x, y)
    rows, cols = linear_sum_assignment(cost)
    assignment = cost[rows, cols].mean()
    assert exact_w1(x, y) == pytest.approx(assignment, abs=1e-10)
    assert exact_w1(x, y) == pytest.approx(w1_by_linprog(x, y), abs=1e-8)


def test_unequal_sizes_match_the_lp():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(13, 3)), rng.normal(size=(7, 3))
    assert exact_w1(x, y) == pytest.approx(w1_by_linprog(x, y), abs=1e-8)


def test_images_are_flattened_and_identical_sets_are_at_distance_zero():
    rng = np.random.default_rng(2)
    images = rng.random(size=(6, 8, 8))
    assert exact_w1(images, images.reshape(6, 64)) == pytest.approx(0, abs=1e-12)
    shifted = images + 0.1   # every point moves by 0.1·√64 = 0.8: W1 is exactly that
    assert exact_w1(images, shifted) == pytest.approx(0.8, rel=1e-9)


def test_tensor_input_is_differentiable_and_matches_finite_differences():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    value = exact_w1(x, y)
    assert isinstance(value, torch.Tensor)
    assert float(value.detach()) == pytest.approx(exact_w1(x.detach().numpy(), y.numpy()), abs=1e-12)
    (grad,) = torch.autograd.grad(value, x)
    step = 1e-6
    numeric = np.zeros((9, 4))
    base = x.detach().numpy()
    for i in range(9):
        for k in range(4):
            plus, minus = base.copy(), base.copy()
            plus[i, k] += step
            minus[i, k] -= step
            numeric[i, k] = (exact_w1(plus, y.numpy()) - exact_w1(minus, y.numpy())) / (2 * step)
    assert np.allclose(grad.numpy(), numeric, atol=1e-6)


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((3, 2)), np.zeros((3, 5)), "different sizes"),
    (np.zeros((0, 2)), np.zeros((3, 2)), "at least one point"),
    (np.array([[np.nan, 0.0]]), np.zeros((3, 2)), "finite"),
])
def test_bad_input_is_refused(x, y, message):
    with pytest.raises(ValueError, match=message):
        exact_w1(x, y)


def test_c_transform_against_a_loop_and_weak_duality():
    from kitlib.ot import c_transform, c_transform_value

    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(7, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
    cost = torch.cdist(x, y)
    for _ in range(20):   # any potential: the dual value never exceeds W1
        phi = 2 * torch.randn(7, generator=gen, dtype=torch.float64)
        loop = torch.tensor([min(float(cost[i, j] - phi[i]) for i in range(7)) for j in range(5)], dtype=torch.float64)
        assert torch.allclose(c_transform(phi, cost), loop)
        assert float(c_transform_value(phi, cost)) <= exact_w1(x.numpy(), y.numpy()) + 1e-12
    with pytest.raises(ValueError, match="shape"):
        c_transform(torch.zeros(3), cost)


def test_c_transform_value_reaches_w1_at_an_optimal_potential():
    """Kantorovich duality: for m = n the LP dual solved by POT gives a potential whose value equals W1."""
    import ot

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 2)), rng.normal(size=(12, 2))
    cost = cdist(x, y)
    _, log = ot.emd(ot.unif(12), ot.unif(12), cost, log=True)
    value = c_transform_value(torch.tensor(log["u"]), torch.tensor(cost))
    assert float(value) == pytest.approx(exact_w1(x, y), abs=1e-9)
