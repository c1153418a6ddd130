"""Derivatives of a loss of a flat parameter vector θ, and the finite differences that check them.

Used by the flooding chapter (∇‖∇L‖² = 2Hg) and by any chapter that needs Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LossFn = Callable[[torch.Tensor], torch.Tensor]


def gradient(loss_fn: LossFn, theta: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """g = ∇L(θ), shape of θ."""
    theta = theta.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(theta), theta, create_graph=create_graph)
    return g


def hessian_vector_product(loss_fn: LossFn, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """H v = ∇(∇L(θ)·v) by double backpropagation (no Hessian is formed)."""
    theta = theta.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(theta), theta, create_graph=True)
    (hv,) = torch.autograd.grad(g @ v, theta)
    return hv


def grad_norm_sq_gradient(loss_fn: LossFn, theta: torch.Tensor) -> torch.Tensor:
    """∇_θ ‖∇L(θ)‖² by double backpropagation; equals 2 H g (Su's identity in the flooding post)."""
    theta = theta.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(theta), theta, create_graph=True)
    (out,) = torch.autograd.grad((g * g).sum(), theta)
    return out


def central_difference_gradient(f: LossFn, theta: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """∂f/∂θ_i ≈ (f(θ + h e_i) − f(θ − h e_i)) / 2h, one coordinate at a time (an independent check:
    no autograd through the difference). Error O(h²); use float64."""
    theta = theta.detach()
    out = torch.empty_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e.view(-1)[i] = h
        out.view(-1)[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return out


def flat_parameters(model: torch.nn.Module) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict]]:
    """θ = all parameters of ``model`` as one flat detached vector (in ``named_parameters`` order), and the
    map back, θ ↦ {name: tensor}, for ``torch.func.functional_call(model, unflatten(θ), args)``: turns a
    network's loss into a :data:`LossFn` of θ (used by the flooding chapter's check of one training step)."""
    named = [(name, p.shape, p.numel()) for name, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflatten(vector: torch.Tensor) -> dict:
        out, start = {}, 0
        for name, shape, count in named:
            out[name] = vector[start:start + count].view(shape)
            start += count
        return out

    return theta, unflatten
