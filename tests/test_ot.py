"""kitlib.ot.exact_w1 against an optimal assignment, a HiGHS linear programme and finite differences."""

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment, linprog
from scipy.spatial.distance import cdist

from kitlib.ot import KantorovichPotential, c_transform_value, exact_w1


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


def _digit_batches(m, seed=0):
    from sklearn.datasets import load_digits

    digits = load_digits().data / 16
    rng = np.random.default_rng(seed)
    return digits[rng.choice(len(digits), m, replace=False)], digits[rng.choice(len(digits), m, replace=False)]


def test_w1_fails_for_a_squared_euclidean_cost():
    """Claim W1 can fail: the squared distance (the W2² cost, a common slip) instead of ‖x − y‖ moves the
    network simplex's value far beyond the 1e-8 agreement with the assignment."""
    x, y = _digit_batches(64)
    rows, cols = linear_sum_assignment(cdist(x, y))
    assignment = cdist(x, y)[rows, cols].mean()
    assert abs(exact_w1(x, y) - assignment) < 1e-8
    wrong = float(ot.emd2(ot.unif(64), ot.unif(64), cdist(x, y, "sqeuclidean")))
    assert abs(wrong - assignment) > 1e-2


def test_w2_fails_for_the_entropic_objective():
    """Claim W2 can fail: reporting Sinkhorn's regularised objective ⟨γ, C⟩ + ε Σ γ log γ instead of the
    transport cost ⟨γ, C⟩ of its plan puts the value below the exact W1 (the plan's cost never is)."""
    x, y = _digit_batches(64, seed=1)
    cost = cdist(x, y)
    exact = exact_w1(x, y)
    plan = ot.sinkhorn(ot.unif(64), ot.unif(64), cost, 0.05, numItermax=20000, stopThr=1e-6)
    transport = float((plan * cost).sum())
    objective = transport + 0.05 * float((plan * np.log(np.maximum(plan, 1e-300))).sum())
    assert transport >= exact - 1e-9
    assert objective < exact - 1e-9


def test_w3_fails_for_a_c_transform_with_the_wrong_sign():
    """Claim W3 can fail: φ^c(y) = min_i [c(x_i, y) + φ(x_i)] (sign slip) exceeds the exact W1 for some of the
    chapter's random critics (MLP 64-32-1, tanh, outputs ×5), while the right c-transform never does."""
    from torch import nn

    from kitlib.gan_networks import mlp

    x, y = _digit_batches(64, seed=2)
    xt, cost = torch.tensor(x), torch.tensor(cdist(x, y))
    exact = exact_w1(x, y)
    torch.manual_seed(0)
    right, wrong = [], []
    for _ in range(20):
        with torch.no_grad():
            phi = 5 * mlp([64, 32, 1], activation=nn.Tanh).double()(xt).squeeze(-1)
        right.append(float(c_transform_value(phi, cost)) - exact)
        wrong.append(float(phi.mean() + (cost + phi[:, None]).min(dim=0).values.mean()) - exact)
    assert max(right) <= 1e-9
    assert max(wrong) > 1e-6


def test_kantorovich_potential_attains_w1_and_is_1_lipschitz():
    """Strong duality: the extended potential φ(z) = min_j [‖z − y_j‖ − v_j], with its c-transform over x,
    reaches the exact W1 of the sets it was fitted to; it is 1-Lipschitz everywhere (random pairs of points);
    the zero potential stays below."""
    rng = np.random.default_rng(21)
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + np.array([1.5, 0.0])
    potential = KantorovichPotential(x, y)
    xt, yt = torch.tensor(x), torch.tensor(y)
    cost = torch.cdist(xt, yt)
    value = float(c_transform_value(potential(xt)[:, 0], cost))
    w1 = exact_w1(x, y)
    assert value == pytest.approx(w1, abs=1e-9)
    a, b = torch.tensor(rng.normal(size=(500, 2)) * 3), torch.tensor(rng.normal(size=(500, 2)) * 3)
    slopes = (potential(a) - potential(b))[:, 0].abs() / (a - b).norm(dim=1)
    assert float(slopes.max()) <= 1 + 1e-9
    assert float(c_transform_value(torch.zeros(60, dtype=torch.float64), cost)) < w1 - 1e-3
