"""kitlib.path_kernel against independent computations: loops of autograd.grad, explicit Gram sums,
closed forms for the linear model."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kitlib.data import digits_split
from kitlib.models import digits_cnn
from kitlib.path_kernel import (PathKernel, accumulate_contributions, accumulate_path_kernel, flat_parameters,
                                log_log_slope, max_relative_gap, per_sample_jacobian, per_sample_jacobian_loop,
                                tangent_kernel_gram, tangent_kernel_gram_loop, train_and_reconstruct)


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def test_per_sample_jacobian_and_gram_match_the_loop(mlp):
    """Claim P3: torch.func Gram = loop of torch.autograd.grad (float64 to 1e-12)."""
    x1, x2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(per_sample_jacobian(mlp, x1), per_sample_jacobian_loop(mlp, x1), rtol=0, atol=1e-12)
    gram = tangent_kernel_gram(mlp, x1, x2)
    assert gram.shape == (6, 4, 3, 3)
    torch.testing.assert_close(gram, tangent_kernel_gram_loop(mlp, x1, x2), rtol=0, atol=1e-12)


def test_gram_of_a_cnn(mlp):
    torch.manual_seed(1)
    cnn = digits_cnn(channels=2).double()
    x = torch.rand(3, 64, dtype=torch.float64)
    torch.testing.assert_close(tangent_kernel_gram(cnn, x, x), tangent_kernel_gram_loop(cnn, x, x), rtol=0, atol=1e-12)


def test_flat_parameters_round_trip(mlp):
    theta, forward = flat_parameters(mlp)
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(forward(theta, x), mlp(x))
    assert theta.numel() == sum(p.numel() for p in mlp.parameters())


def test_reconstruction_trains_the_model_and_gram_sum_equals_jvp_sum(mlp):
    """Euler sum by JVPs = f_0 + Σ_i per-training-point Gram terms (claim P3, second part), and the model
    ends where plain gradient descent takes it."""
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    xq = torch.randn(4, 5, dtype=torch.float64)
    reference = copy.deepcopy(mlp)
    opt = torch.optim.SGD(reference.parameters(), lr=0.3)
    for _ in range(15):
        opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        opt.step()
    rebuilt = train_and_reconstruct(copy.deepcopy(mlp), F.cross_entropy, x, y, xq, 0.3, 15)
    torch.testing.assert_close(rebuilt.final, reference(xq).detach())
    initial, contributions = accumulate_contributions(copy.deepcopy(mlp), F.cross_entropy, x, y, xq, 0.3, 15)
    torch.testing.assert_close(initial + contributions.sum(1), rebuilt.euler, rtol=0, atol=1e-10)
    assert rebuilt.relative_error("trapezoid") < rebuilt.relative_error("euler")


def test_kernel_machine_identity_and_psd():
    """Claims P4, P5 on a scalar model: β + Σ α_i(x) K(x, x_i) = Euler sum; the train Gram is PSD."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).unsqueeze(1)
    y = torch.sin(3 * x)
    xq = torch.linspace(-1.1, 1.1, 9, dtype=torch.float64).unsqueeze(1)
    loss = lambda f, t: 0.5 * ((f - t) ** 2).mean()
    kernel = accumulate_path_kernel(copy.deepcopy(model), lambda f, t: (f - t.squeeze(-1)) / len(t), x, y, xq,
                                    0.1, 30)
    euler = train_and_reconstruct(copy.deepcopy(model), loss, x, y, xq, 0.1, 30)
    torch.testing.assert_close(kernel.kernel_machine(), euler.euler, rtol=0, atol=1e-10)
    torch.testing.assert_close(kernel.final, euler.final)
    eigenvalues = torch.linalg.eigvalsh(kernel.train_train)
    assert eigenvalues.min() >= -1e-8 * eigenvalues.max()


def test_linear_model_path_kernel_is_T_times_dot_plus_one():
    """Claim P7: for f(x) = wᵀx + b the path kernel is T (xᵀx' + 1)."""
    torch.manual_seed(3)
    linear = nn.Linear(4, 1).double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    xq = torch.randn(3, 4, dtype=torch.float64)
    kernel = accumulate_path_kernel(linear, lambda f, t: (f - t.squeeze(-1)) / len(t), x, y, xq, 0.05, 20)
    torch.testing.assert_close(kernel.query_train, 0.05 * 20 * (xq @ x.T + 1), rtol=1e-12, atol=1e-12)


def test_sgd_batches_are_used():
    torch.manual_seed(4)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3])]
    r = train_and_reconstruct(copy.deepcopy(model), F.cross_entropy, x, y, x[:2], 0.1, 2, batches=batches)
    manual = copy.deepcopy(model)
    for idx in batches:
        grads = torch.autograd.grad(F.cross_entropy(manual(x[idx]), y[idx]), list(manual.parameters()))
        with torch.no_grad():
            for p, g in zip(manual.parameters(), grads):
                p -= 0.1 * g
    torch.testing.assert_close(r.final, manual(x[:2]).detach())
    torch.testing.assert_close(r.euler, r.final, rtol=0, atol=1e-12)   # a linear model: Euler is exact


# -- helpers added for chapter format v2 --------------------------------------------------------------------
def test_log_log_slope_recovers_the_order_of_a_power_law():
    lrs = [0.4, 0.2, 0.1, 0.05]
    assert log_log_slope(lrs, [3 * lr**2 for lr in lrs]) == pytest.approx(2.0)
    assert log_log_slope(lrs, [0.7 * lr for lr in lrs]) == pytest.approx(1.0)


def test_max_relative_gap():
    reference = torch.tensor([[2.0, -4.0], [1.0, 0.0]])
    assert max_relative_gap(reference + torch.tensor([[0.0, 0.4], [0.0, 0.0]]), reference) == pytest.approx(0.1)
    assert max_relative_gap(torch.zeros(2), torch.zeros(2)) == 0.0


def test_frozen_alpha_and_relative_error():
    """ᾱ_i = mean over queries of A/K; relative error ‖rebuilt − f_T‖/‖f_T − f_0‖ (claim P6's statistic)."""
    kernel = PathKernel(query_train=torch.tensor([[1.0, 2.0], [4.0, 1.0]]),
                        weighted=torch.tensor([[1.0, 4.0], [2.0, 3.0]]), train_train=torch.eye(2),
                        initial=torch.tensor([[0.0], [1.0]]), final=torch.tensor([[5.0], [6.0]]))
    frozen = kernel.frozen_alpha()                          # α = [[1, 2], [0.5, 3]] → ᾱ = [0.75, 2.5]
    torch.testing.assert_close(frozen, torch.tensor([[0.75, 2.5], [0.75, 2.5]]))
    torch.testing.assert_close(kernel.kernel_machine(), kernel.final)   # exact α: β + Σ A = f_T here
    rebuilt = kernel.kernel_machine(frozen)                 # [[0 + 0.75 + 5], [1 + 3 + 2.5]]
    expected = torch.tensor([[5.75], [6.5]])
    torch.testing.assert_close(rebuilt, expected)
    assert kernel.relative_error(rebuilt) == pytest.approx(float((expected - kernel.final).norm() / 50**0.5))


def test_linearised_training_matches_an_explicit_taylor_model():
    """accumulate_path_kernel(linearised=True) trains f(x; θ_0) + J(x; θ_0)(θ − θ_0) by GD (checked against a
    hand-written loop over that model); its α_i(x) does not depend on x, so freezing it is exact (P6's null)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).unsqueeze(1)
    y, xq = torch.sin(3 * x), torch.linspace(-1.1, 1.1, 9, dtype=torch.float64).unsqueeze(1)
    derivative = lambda f, t: (f - t.squeeze(-1)) / len(t)
    lazy = accumulate_path_kernel(copy.deepcopy(model), derivative, x, y, xq, 0.1, 40, linearised=True)
    theta0, forward = flat_parameters(model)
    taylor = lambda t, inputs: forward(theta0, inputs) + torch.func.jvp(lambda s: forward(s, inputs), (theta0,),
                                                                        (t - theta0,))[1]
    theta = theta0.clone()
    for _ in range(40):
        theta = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(0.5 * ((taylor(theta, x) - y) ** 2).mean(), theta)
        theta = theta - 0.1 * grad
    torch.testing.assert_close(lazy.final, taylor(theta, xq).detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(lazy.kernel_machine(), lazy.final, rtol=0, atol=1e-12)
    assert lazy.relative_error(lazy.kernel_machine(lazy.frozen_alpha())) < 1e-8
    nonlinear = accumulate_path_kernel(copy.deepcopy(model), derivative, x, y, xq, 0.1, 40)
    assert nonlinear.relative_error(nonlinear.kernel_machine(nonlinear.frozen_alpha())) > 1e-3


# -- each identity of the chapter fails for a plausible wrong implementation ---------------------------------
# Tolerances as declared in chapters/sgd-svm.md.
P3_FLOAT64, P1_ERROR, P1_SLOPE, P2_ERROR, P2_SLOPE = 1e-12, 1.2e-2, (0.9, 1.1), 1e-4, (1.8, 2.3)
P4_RATIO, P5_GAP, P7_GAP = -1e-8, 1e-10, 1e-12


def test_P3_batch_summed_jacobian_fails_the_tolerance(mlp):
    """P3: per-sample Jacobians by vmap(jacrev) match the loop; the classic per-sample-gradient mistake — the
    Jacobian of the batch's summed output, Σ_j ∇f(x_j), used for every sample — is off by O(1)."""
    x1, x2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    loop = tangent_kernel_gram_loop(mlp, x1, x2)
    assert max_relative_gap(tangent_kernel_gram(mlp, x1, x2), loop) <= P3_FLOAT64
    theta, forward = flat_parameters(mlp)
    summed = lambda x: torch.func.jacrev(lambda t: forward(t, x).sum(0))(theta).expand(len(x), -1, -1)
    assert max_relative_gap(torch.einsum("icp,jdp->ijcd", summed(x1), summed(x2)), loop) > 1e-3


def _reconstructions(lr, steps):
    """Train a small digits MLP by GD and rebuild its query outputs with the right per-step increments and
    with plausible wrong ones: J(θ_t)(−∇L) (learning rate missing), −J(θ_t)Δθ_t (loss derivative's sign
    flipped) and J(θ_{t+1})Δθ_t on both halves of the trapezoid (gradients at θ_{t+1} on both sides)."""
    digits = digits_split(np.random.default_rng(0), n_val=0, n_test=8, standardise=False)
    x, y, xq = digits.x_train[:32].double(), digits.y_train[:32], digits.x_test.double()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    theta, forward = flat_parameters(model)
    at = lambda t, v: torch.func.jvp(lambda s: forward(s, xq), (t,), (v,))[1]
    initial = forward(theta, xq).detach()
    sums = dict.fromkeys(["euler", "trapezoid", "no_lr", "sign", "right_point"], 0)
    for _ in range(steps):
        theta_req = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(forward(theta_req, x), y), theta_req)
        delta = -lr * grad
        here, there = at(theta, delta), at(theta + delta, delta)
        for key, increment in (("euler", here), ("trapezoid", 0.5 * (here + there)), ("no_lr", at(theta, -grad)),
                               ("sign", -here), ("right_point", there)):
            sums[key] = sums[key] + increment
        theta = theta + delta
    final = forward(theta, xq).detach()
    errors = {k: float((initial + s - final).norm() / (final - initial).norm()) for k, s in sums.items()}
    return errors, train_and_reconstruct(model, F.cross_entropy, x, y, xq, lr, steps)


def test_P1_P2_wrong_path_kernel_sums_fail_the_tolerances():
    """P1 (Euler error and order 1) and P2 (trapezoid error and order 2) at T = 2.5, η = 1/16 and 1/32: the right
    sums (equal to kitlib's) meet the chapter's bounds; a missing learning rate or a flipped loss-derivative
    sign breaks P1's error bound, and θ_{t+1} on both sides of the trapezoid leaves it first order (P2)."""
    lrs = (0.0625, 0.03125)
    runs = [_reconstructions(lr, int(round(2.5 / lr))) for lr in lrs]
    for errors, kitlib_run in runs:
        assert errors["euler"] == pytest.approx(kitlib_run.relative_error("euler"), rel=1e-9)
        assert errors["trapezoid"] == pytest.approx(kitlib_run.relative_error("trapezoid"), rel=1e-9)
    errors = {k: [e[k] for e, _ in runs] for k in runs[0][0]}
    assert errors["euler"][0] <= P1_ERROR and P1_SLOPE[0] <= log_log_slope(lrs, errors["euler"]) <= P1_SLOPE[1]
    assert errors["trapezoid"][0] <= P2_ERROR
    assert P2_SLOPE[0] <= log_log_slope(lrs, errors["trapezoid"]) <= P2_SLOPE[1]
    assert errors["no_lr"][0] > P1_ERROR and errors["sign"][0] > P1_ERROR
    assert errors["right_point"][0] > P2_ERROR
    assert not P2_SLOPE[0] <= log_log_slope(lrs, errors["right_point"]) <= P2_SLOPE[1]


def _line_problem():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).unsqueeze(1)
    return model, x, torch.sin(3 * x), torch.linspace(-1.1, 1.1, 9, dtype=torch.float64).unsqueeze(1)


def test_P5_wrong_loss_derivatives_fail_the_tolerance():
    """P5: β + Σ α_i K from the Grams equals the Euler sum from JVPs only with the right ℓ'_i = (f − y)/n; the
    flipped sign (y − f)/n and the sum-loss derivative f − y (1/n missing) miss by far more than 1e-10."""
    model, x, y, xq = _line_problem()
    euler = train_and_reconstruct(copy.deepcopy(model), lambda f, t: 0.5 * ((f - t) ** 2).mean(), x, y, xq, 0.1,
                                  30).euler
    gap = lambda derivative: (accumulate_path_kernel(copy.deepcopy(model), derivative, x, y, xq, 0.1, 30)
                              .kernel_machine() - euler).abs().max().item()
    assert gap(lambda f, t: (f - t.squeeze(-1)) / len(t)) <= P5_GAP
    assert gap(lambda f, t: (t.squeeze(-1) - f) / len(t)) > 1e-3
    assert gap(lambda f, t: f - t.squeeze(-1)) > 1e-3


def test_P4_the_loss_weighted_gram_is_not_psd():
    """P4: Σ_t η K_t(x_i, x_j) is PSD; confusing it with the loss-weighted accumulator −Σ_t η K_t ℓ'_t (the
    ``weighted`` field, Remark 2's kernel) gives a symmetric part with clearly negative eigenvalues."""
    model, x, y, _ = _line_problem()
    kernel = accumulate_path_kernel(model, lambda f, t: (f - t.squeeze(-1)) / len(t), x, y, x, 0.1, 30)
    ratio = lambda gram: (lambda e: (e.min() / e.max()).item())(torch.linalg.eigvalsh(0.5 * (gram + gram.T)))
    assert ratio(kernel.train_train) >= P4_RATIO
    torch.testing.assert_close(kernel.query_train, kernel.train_train)    # queries = training points
    assert ratio(kernel.weighted) < -1e-3


def test_P7_missing_bias_or_learning_rate_fails_the_tolerance():
    """P7: the path kernel of f = wᵀx + b is T(xᵀx' + 1); dropping the bias's constant gradient (T xᵀx') or
    the step size (S (xᵀx' + 1) with S steps) misses by far more than 1e-12."""
    torch.manual_seed(3)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    xq = torch.randn(3, 4, dtype=torch.float64)
    kernel = accumulate_path_kernel(nn.Linear(4, 1).double(), lambda f, t: (f - t.squeeze(-1)) / len(t), x, y, xq,
                                    0.05, 20).query_train
    assert max_relative_gap(kernel, 0.05 * 20 * (xq @ x.T + 1)) <= P7_GAP
    assert max_relative_gap(kernel, 0.05 * 20 * (xq @ x.T)) > 1e-3
    assert max_relative_gap(kernel, 20 * (xq @ x.T + 1)) > 1e-3


# -- issue 17: multi-output path Gram, fixed-α fits, neighbour removal ----------------------------------------
def test_accumulate_path_gram_matches_the_jvp_sum_and_explicit_grams(mlp):
    """f_0 + Σ_i contribution = the Euler sum from JVPs; K = Σ_t η K_t with K_t from the loop at each θ_t;
    the model ends where plain GD takes it."""
    from kitlib.path_kernel import accumulate_path_gram
    x, y = torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 3, (9,))
    xq = torch.randn(4, 5, dtype=torch.float64)
    gram = accumulate_path_gram(copy.deepcopy(mlp), F.cross_entropy, x, y, xq, 0.3, 6)
    rebuilt = train_and_reconstruct(copy.deepcopy(mlp), F.cross_entropy, x, y, xq, 0.3, 6)
    torch.testing.assert_close(gram.initial + gram.contributions.sum(1), rebuilt.euler, rtol=0, atol=1e-12)
    torch.testing.assert_close(gram.final, rebuilt.final, rtol=0, atol=1e-12)
    stepped, expected_qt, expected_tt = copy.deepcopy(mlp), 0, 0
    for step in range(6):
        expected_qt = expected_qt + 0.3 * tangent_kernel_gram_loop(stepped, xq, x)
        expected_tt = expected_tt + 0.3 * tangent_kernel_gram_loop(stepped, x, x)
        if step == 0:
            torch.testing.assert_close(gram.initial_train_train, expected_tt / 0.3, rtol=0, atol=1e-12)
        grads = torch.autograd.grad(F.cross_entropy(stepped(x), y), list(stepped.parameters()))
        with torch.no_grad():
            for p, g in zip(stepped.parameters(), grads):
                p -= 0.3 * g
    torch.testing.assert_close(gram.query_train, expected_qt, rtol=0, atol=1e-12)
    torch.testing.assert_close(gram.train_train, expected_tt, rtol=0, atol=1e-12)
    light = accumulate_path_gram(copy.deepcopy(mlp), F.cross_entropy, x, y, xq, 0.3, 6, train_gram=False)
    torch.testing.assert_close(light.contributions, gram.contributions, rtol=0, atol=1e-12)
    assert light.train_train.shape[0] == 0


def test_fit_fixed_alpha_solves_the_block_system_and_predicts():
    """Claim P9's fit: for a well-conditioned block Gram the minimum-norm fit is the exact solve of
    Σ_j G[i, j] α_j = t_i; a scalar kernel acts on each output separately; prediction is Σ_j K(x, x_j) α_j."""
    from kitlib.kernel_fit import fit_fixed_alpha, kernel_predict, rbf_gram, rbf_predictions
    torch.manual_seed(6)
    features = torch.randn(5, 2, 12, dtype=torch.float64)                     # (n, C, P): G = J Jᵀ
    gram = torch.einsum("icp,jdp->ijcd", features, features)
    targets = torch.randn(5, 2, dtype=torch.float64)
    alpha = fit_fixed_alpha(gram, targets)
    torch.testing.assert_close(torch.einsum("ijcd,jd->ic", gram, alpha), targets, rtol=0, atol=1e-10)
    dense = gram.permute(0, 2, 1, 3).reshape(10, 10)
    torch.testing.assert_close(alpha.reshape(-1), torch.linalg.solve(dense, targets.reshape(-1)), rtol=0, atol=1e-10)
    x = torch.randn(5, 3, dtype=torch.float64)
    scalar = rbf_gram(x, x, 1.5)
    expected = torch.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * 1.5**2))
    torch.testing.assert_close(scalar, expected)
    torch.testing.assert_close(kernel_predict(scalar, fit_fixed_alpha(scalar, targets)), targets, rtol=0, atol=1e-8)
    assert set(rbf_predictions(x, targets, x)) == {0.25, 0.5, 1.0, 2.0}
    # a rank-deficient Gram: the fit stays finite and reproduces targets inside its range
    low = torch.einsum("icp,jdp->ijcd", features[..., :3], features[..., :3])
    in_range = torch.einsum("ijcd,jd->ic", low, torch.randn(5, 2, dtype=torch.float64))
    torch.testing.assert_close(torch.einsum("ijcd,jd->ic", low, fit_fixed_alpha(low, in_range)), in_range,
                               rtol=0, atol=1e-8)


def test_masked_gd_outputs_match_separate_training_runs(mlp):
    """Claim P10's retraining: copy k of the batched run = plain GD on the mean loss over the kept points."""
    from kitlib.neighbour_removal import masked_gd_outputs, removal_masks
    x, y = torch.randn(10, 5, dtype=torch.float64), torch.randint(0, 3, (10,))
    xq = torch.randn(3, 5, dtype=torch.float64)
    masks = removal_masks(10, [torch.tensor([0, 3]), torch.tensor([9])])
    assert masks.sum(1).tolist() == [10, 8, 9]
    outputs = masked_gd_outputs(mlp, lambda o, t: F.cross_entropy(o, t, reduction="none"), x, y, masks, xq, 0.4, 7)
    for k, keep in enumerate(masks.bool()):
        model = copy.deepcopy(mlp)
        for _ in range(7):
            grads = torch.autograd.grad(F.cross_entropy(model(x[keep]), y[keep]), list(model.parameters()))
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= 0.4 * g
        torch.testing.assert_close(outputs[k], model(xq).detach(), rtol=0, atol=1e-12)
    assert (outputs[1] - outputs[0]).abs().max() > 1e-4     # removing points changes the outcome


def test_pole_free_freezing_variation_and_cancellation_against_loops():
    """Claim P6's pole-free statistics: ᾱ_i = argmin_a Σ_x (A − aK)² (checked against numpy's lstsq per training
    point), the coefficient of variation of A/K where |K| ≥ 0.1 max|K| (a loop), and Σ|terms| / |Σ terms|."""
    torch.manual_seed(3)
    k = torch.randn(7, 4, dtype=torch.float64)
    k[2, 1] = 1e-9                                                  # a pole of A/K at query 2, training point 1
    a = k * torch.rand(1, 4, dtype=torch.float64) + 0.01 * torch.randn(7, 4, dtype=torch.float64)
    kernel = PathKernel(query_train=k, weighted=a, train_train=torch.eye(4, dtype=torch.float64),
                        initial=torch.zeros(7, 1, dtype=torch.float64), final=a.sum(1, keepdim=True))
    frozen = kernel.least_squares_alpha()
    assert frozen.shape == (7, 4)
    for i in range(4):
        expected = np.linalg.lstsq(k[:, i : i + 1].numpy(), a[:, i].numpy(), rcond=None)[0][0]
        assert frozen[0, i].item() == pytest.approx(expected, rel=1e-12)
    variation = kernel.alpha_variation(0.1)
    for i in range(4):
        kept = [(a[x, i] / k[x, i]).item() for x in range(7) if abs(k[x, i]) >= 0.1 * k[:, i].abs().max()]
        assert variation[i].item() == pytest.approx(np.std(kept) / np.mean(np.abs(kept)), rel=1e-10)
    assert np.isfinite(variation.numpy()).all()                     # the pole at (2, 1) is left out
    assert kernel.alpha()[:, 1].abs().max() > 1e3                  # ... though A/K itself blows up there
    cancellation = kernel.cancellation()
    for x in range(7):
        assert cancellation[x].item() == pytest.approx((a[x].abs().sum() / a[x].sum().abs()).item(), rel=1e-12)
    inside = torch.tensor([True, True, False, True, False, True, True])
    rebuilt = kernel.final + 0.1
    assert kernel.relative_error(rebuilt, inside) == pytest.approx(
        0.1 * int(inside.sum()) ** 0.5 / kernel.final[inside].norm().item(), rel=1e-12)


def test_scalar_jacobian_matches_the_autograd_loop_and_falls_back():
    """The layer-by-layer (n, P) Jacobian used by accumulate_path_kernel equals the loop of autograd.grad, at the
    θ it is given (not the module's current one), and models outside Linear/Conv2d fall back to vmap(jacrev)."""
    from kitlib.path_kernel import scalar_jacobian
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    theta, _ = flat_parameters(model)
    shifted = theta + 0.1 * torch.randn_like(theta)
    j = scalar_jacobian(model, x, shifted)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(shifted, model.parameters())
    torch.testing.assert_close(j, per_sample_jacobian_loop(model, x)[:, 0], rtol=0, atol=1e-13)
    odd = nn.Sequential(nn.Linear(2, 6), nn.LayerNorm(6), nn.Linear(6, 1)).double()
    theta_odd, _ = flat_parameters(odd)
    torch.testing.assert_close(scalar_jacobian(odd, x, theta_odd), per_sample_jacobian_loop(odd, x)[:, 0],
                               rtol=0, atol=1e-13)


def test_final_feature_gram_matches_a_loop_and_the_read_out_share_of_the_tangent_kernel():
    from kitlib.kernel_fit import final_feature_gram
    from kitlib.path_kernel import tangent_kernel_gram_loop
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    a, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    gram = final_feature_gram(net, a, b)
    with torch.no_grad():
        loop = torch.tensor([[float(torch.tanh(net[0](a[i])) @ torch.tanh(net[0](b[j])) + 1) for j in range(6)]
                             for i in range(4)], dtype=torch.float64)
    assert torch.allclose(gram, loop, atol=1e-12)
    # it is the read-out layer's part of the tangent kernel: the full tangent kernel of the read-out alone
    class Frozen(nn.Module):                                              # the features, with no parameters
        def __init__(self, layers):
            super().__init__()
            self.layers = [layers]

        def forward(self, x):
            return self.layers[0](x).detach()

    readout = nn.Sequential(Frozen(net[:-1]), net[-1])
    full = tangent_kernel_gram_loop(readout, a, b)                        # (4, 6, 3, 3), read-out parameters only
    assert torch.allclose(full, gram[:, :, None, None] * torch.eye(3, dtype=torch.float64), atol=1e-10)
    # a wrong feature map (the pre-activation) is not it
    wrong = net[0](a).detach() @ net[0](b).detach().T + 1
    assert (wrong - gram).abs().max() > 1e-2


def test_freeze_error_split_against_a_loop():
    g = torch.Generator().manual_seed(3)
    k = torch.randn(5, 4, generator=g, dtype=torch.float64)
    a = torch.randn(5, 4, generator=g, dtype=torch.float64)
    init, final = torch.zeros(5, 1, dtype=torch.float64), torch.randn(5, 1, generator=g, dtype=torch.float64)
    pk = PathKernel(k, a, torch.eye(4, dtype=torch.float64), init, final)
    alpha = torch.randn(1, 4, generator=g, dtype=torch.float64).expand(5, -1)
    away, near = pk.freeze_error_split(alpha, 0.5)
    parts = [[0.0] * 5, [0.0] * 5]
    for i in range(4):
        top = max(abs(float(k[x, i])) for x in range(5))
        for x in range(5):
            parts[0 if abs(float(k[x, i])) >= 0.5 * top else 1][x] += float(alpha[x, i] * k[x, i] - a[x, i])
    scale = math.sqrt(sum(float(v) ** 2 for v in final.flatten()))
    assert abs(away - math.sqrt(sum(v * v for v in parts[0])) / scale) < 1e-12
    assert abs(near - math.sqrt(sum(v * v for v in parts[1])) / scale) < 1e-12
