"""Exercises of the `sgd-svm` chapter. The stability threshold is verified against the eigenvalues of Hessians
known in closed form (a quadratic, a quadratic plus a quartic) and of a small network's Hessian formed by
``torch.autograd.functional.hessian``; the loss-weighted path kernel against
:func:`kitlib.path_kernel.accumulate_path_kernel` (tested against Jacobian-vector-product sums, explicit Taylor
models and closed forms in tests/test_path_kernel.py)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from kitlib.exercises import Exercise, as_number, expect_close, hidden_generator
from kitlib.path_kernel import accumulate_path_kernel


def _orthogonal(p: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    return q


def _spectrum(p: int, g: torch.Generator) -> torch.Tensor:
    """P eigenvalues: the largest in [1, 5], the others at most 0.7 of it and above −0.6 of it (so that the
    largest eigenvalue is also the largest in magnitude, with a gap that a few iterations do not close)."""
    top = 1 + 4 * float(torch.rand((), generator=g))
    rest = top * (-0.6 + 1.3 * torch.rand(p - 1, generator=g, dtype=torch.float64))
    return torch.cat([torch.tensor([top], dtype=torch.float64), rest])


def _tiny_net_loss(g: torch.Generator):
    """Half mean squared error of a 1-8-1 tanh network on 12 points of sin 2x, as a function of the flat
    parameter vector (25 numbers); returns (loss, θ)."""
    x = torch.linspace(-2, 2, 12, dtype=torch.float64).unsqueeze(1)
    y = torch.sin(2 * x)

    def loss(theta):
        w1, b1, w2, b2 = theta[:8].view(8, 1), theta[8:16], theta[16:24].view(1, 8), theta[24:]
        return 0.5 * ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

    return loss, torch.randn(25, generator=g, dtype=torch.float64)


def _stability_problems(label: str):
    """Hidden (loss, θ, v0, reference λ_max): a quadratic, a quadratic plus a quartic, a small network."""
    g = hidden_generator(label)
    for p in (6, 15):
        q, eigenvalues = _orthogonal(p, g), _spectrum(p, g)
        a, b = q @ torch.diag(eigenvalues) @ q.T, torch.randn(p, generator=g, dtype=torch.float64)
        theta = torch.randn(p, generator=g, dtype=torch.float64)
        yield (lambda t, a=a, b=b: 0.5 * t @ a @ t + b @ t), theta, eigenvalues.max()
    q, eigenvalues = _orthogonal(10, g), _spectrum(10, g)
    a, c = q @ torch.diag(eigenvalues) @ q.T, 0.2
    theta = 0.5 * torch.randn(10, generator=g, dtype=torch.float64)
    hessian = a + 3 * c * torch.diag(theta ** 2)                           # ∇²(¼ c Σθ⁴) = 3c diag(θ²)
    yield (lambda t: 0.5 * t @ a @ t + 0.25 * c * (t ** 4).sum()), theta, torch.linalg.eigvalsh(hessian).max()
    loss, theta = _tiny_net_loss(g)
    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))
    yield loss, theta, eigenvalues.max()


def _verify_stability(answer) -> None:
    label = "sgd-svm-ex-stability"
    g = hidden_generator(label, salt=1)
    for k, (loss, theta, top) in enumerate(_stability_problems(label)):
        v0 = torch.randn(len(theta), generator=g, dtype=torch.float64)
        got = answer(loss, theta.clone(), v0.clone(), 60)
        value = as_number(got, "the threshold")
        # |λ₂|/λ₁ ≤ 0.7 on every hidden Hessian (by construction for the quadratics; asserted for all four in
        # tests/test_exercises_sgd_svm.py): 60 iterations leave a Rayleigh error ~0.7¹²⁰, far below rounding
        expect_close(value, 2 / float(top), rtol=1e-9, atol=0.0,
                     what=f"the threshold of hidden loss {k + 1} ({len(theta)} parameters)")


def _hidden_net(dim: int, g: torch.Generator) -> nn.Module:
    """A float64 tanh MLP dim → 8 → 8 → 1 whose weights come from ``g`` (never the global RNG): the layers are
    built uninitialised (``skip_init``, which draws nothing) and filled with PyTorch's default ranges
    U(±1/√fan_in)."""
    layers = [nn.utils.skip_init(nn.Linear, a, b, dtype=torch.float64) for a, b in ((dim, 8), (8, 8), (8, 1))]
    with torch.no_grad():
        for layer in layers:
            bound = layer.in_features ** -0.5
            for p in (layer.weight, layer.bias):
                p.copy_(bound * (2 * torch.rand(p.shape, generator=g, dtype=torch.float64) - 1))
    return nn.Sequential(layers[0], nn.Tanh(), layers[1], nn.Tanh(), layers[2])


def _verify_loss_weighted(answer) -> None:
    label = "sgd-svm-ex-lossweighted"
    g = hidden_generator(label)
    derivative = lambda f, y: (f - y.squeeze(-1)) / len(y)        # ∂L/∂f(x_i) for L = mean ½(f − y)²
    for n, n_q, dim, lr, steps in ((5, 3, 1, 0.2, 8), (7, 3, 2, 0.1, 6)):
        model = _hidden_net(dim, g)
        x = 2 * torch.rand(n, dim, generator=g, dtype=torch.float64) - 1
        y = torch.sin(2 * x.sum(1, keepdim=True))
        x_query = 2 * torch.rand(n_q, dim, generator=g, dtype=torch.float64) - 1
        want = -accumulate_path_kernel(copy.deepcopy(model), derivative, x, y, x_query, lr, steps).weighted
        got = answer(copy.deepcopy(model), x.clone(), y.clone(), x_query.clone(), lr, steps)
        if isinstance(got, torch.Tensor):
            got = got.detach()
        expect_close(got, want, rtol=1e-8, atol=1e-10 * float(want.abs().max()),
                     what=f"the kernel of {n_q} hidden queries and {n} training points after {steps} steps")


EXERCISES = [
    Exercise(
        label="sgd-svm-ex-stability", chapter="sgd-svm", function="stability_threshold",
        asks="Estimate gradient descent's stability threshold 2/λ_max by power iteration with Hessian-vector "
             "products (§2, past the stability threshold).",
        expected="2/λ_max, with λ_max the Rayleigh quotient vᵀHv/vᵀv after the given number of power iterations "
                 "v ← Hv/‖Hv‖ from v0, each Hv a Hessian-vector product of the loss at θ, as one number",
        minutes=15, prerequisites="§2 (the stability threshold of the 1-D regression); `hessian_vector_product`",
        verify=_verify_stability),
    Exercise(
        label="sgd-svm-ex-lossweighted", chapter="sgd-svm", function="loss_weighted_path_kernel",
        asks="Train a small network by gradient descent and accumulate Domingos's loss-weighted path kernel "
             "along the way (§3, Remark 2).",
        expected="the (queries × training points) sum over steps of η ℓ'_{t,i} K_t(x, x_i), with the tangent "
                 "kernel K_t = ∇f(x)·∇f(x_i) and ℓ'_{t,i} = (f(x_i) − y_i)/N both taken at θ_t before step t, "
                 "and θ updated by full-batch gradient descent on mean ½(f − y)²",
        minutes=25, prerequisites="§1 (the tangent kernel), §3 (K and A, P5)", verify=_verify_loss_weighted),
]
