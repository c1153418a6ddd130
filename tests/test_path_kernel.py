"""kitlib.path_kernel against independent computations: loops of autograd.grad, explicit Gram sums,
closed forms for the linear model."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kitlib.models import digits_cnn
from kitlib.path_kernel import (accumulate_contributions, accumulate_path_kernel, flat_parameters,
                                per_sample_jacobian, per_sample_jacobian_loop, tangent_kernel_gram,
                                tangent_kernel_gram_loop, train_and_reconstruct)


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
