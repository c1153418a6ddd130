"""Tangent and path kernels of a trained network (Domingos 2020; Su, kexue.fm/archives/8009), chapter ``sgd-svm``.

Gradient flow θ̇ = −Σ_i ℓ'_i ∇_θ f(x_i) moves the output at any query x by

    d f(x)/dt = −Σ_i ⟨∇_θ f(x), ∇_θ f(x_i)⟩ ℓ'_i = −Σ_i K_θ(x, x_i) ℓ'_i        (tangent kernel K_θ)

so f_T(x) = f_0(x) − Σ_i ∫ K_θ(t)(x, x_i) ℓ'_i(t) dt = β(x) + Σ_i α_i(x) K(x, x_i), with the path kernel
K = ∫ K_θ(t) dt. With discrete steps Δθ_t the sum −η Σ_i K_t(x, x_i) ℓ'_{t,i} equals J(x; θ_t) Δθ_t, one
Jacobian-vector product — so the reconstruction never needs the Gram itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from kitlib.tangent_kernel import NotFactorisable, explicit_gradient, factorisable, factorised_gram, layer_factors


def flat_parameters(model: nn.Module) -> tuple[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """(θ as one flat vector, f(θ, x)): the model as a function of a flat parameter vector, for torch.func."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def forward(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return functional_call(model, params, (x,))

    return theta, forward


def per_sample_jacobian(model: nn.Module, x: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
    """J[i, c, p] = ∂f_c(x_i)/∂θ_p, shape (n, C, P), by vmap over jacrev (no loop over samples)."""
    theta0, forward = flat_parameters(model)
    theta = theta0 if theta is None else theta
    return vmap(jacrev(lambda t, xi: forward(t, xi.unsqueeze(0)).squeeze(0)), in_dims=(None, 0))(theta, x)


def scalar_jacobian(model: nn.Module, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """J[i, p] = ∂f(x_i)/∂θ_p at the flat parameters θ, (n, P), for a model with one output. Built layer by layer
    from activations and back-propagated sensitivities (:mod:`kitlib.tangent_kernel`: per-sample gradients
    δ(x_i) a(x_i)ᵀ and δ(x_i), three times faster than ``vmap(jacrev)`` on the 1-D MLP of ``sgd-svm``) when the
    model allows it — the module's parameters are then set to θ — else by :func:`per_sample_jacobian`."""
    if factorisable(model):
        try:
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(theta, model.parameters())
            return torch.cat([explicit_gradient(layer, a, delta) for layer, a, delta in layer_factors(model, x)],
                             dim=2)[:, 0].detach()
        except NotFactorisable:
            pass
    return per_sample_jacobian(model, x, theta)[:, 0]


def tangent_kernel_gram(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """K[i, j, c, d] = ⟨∇_θ f_c(x1_i), ∇_θ f_d(x2_j)⟩, shape (n1, n2, C, C): the tangent kernel at the current θ.

    ``method``: "jacobian" contracts per-sample Jacobians (n, C, P) over P (any model); "factorised" sums the
    layers' (A Aᵀ + 1) ⊙ (Δ Δᵀ) without a P-sized tensor (:mod:`kitlib.tangent_kernel`: Linear and Conv2d
    layers); "auto" takes the factorised form when the model allows it, else the Jacobians."""
    if method not in ("auto", "jacobian", "factorised"):
        raise ValueError(f"unknown method {method!r}; choose auto, jacobian or factorised")
    if method == "factorised" or (method == "auto" and factorisable(model)):
        try:
            return factorised_gram(model, x1, x2)
        except NotFactorisable:
            if method == "factorised":
                raise
    j1 = per_sample_jacobian(model, x1)
    j2 = j1 if x2 is x1 else per_sample_jacobian(model, x2)
    return torch.einsum("icp,jdp->ijcd", j1, j2)


def per_sample_jacobian_loop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same (n, C, P) Jacobian by a Python loop of ``torch.autograd.grad`` over samples and outputs:
    the slow reference that :func:`per_sample_jacobian` is tested and timed against."""
    params = list(model.parameters())
    rows = []
    for xi in x:
        out = model(xi.unsqueeze(0)).squeeze(0)
        grads = [torch.autograd.grad(out[c], params, retain_graph=True) for c in range(out.shape[0])]
        rows.append(torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads]))
    return torch.stack(rows)


def tangent_kernel_gram_loop(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """:func:`tangent_kernel_gram` from the looped Jacobians (reference implementation)."""
    return torch.einsum("icp,jdp->ijcd", per_sample_jacobian_loop(model, x1), per_sample_jacobian_loop(model, x2))


def log_log_slope(step_sizes: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope p of log error = p log η + c: the observed order of a quadrature rule at a fixed
    horizon (1 for the Euler path-kernel sum, 2 for the trapezoid rule; claims P1, P2, P8 of ``sgd-svm``)."""
    return float(np.polyfit(np.log(np.asarray(step_sizes, dtype=float)), np.log(np.asarray(errors, dtype=float)),
                            1)[0])


def max_relative_gap(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value − reference| / max |reference| (0 when both vanish): an implementation check measured in
    units of the reference's scale (claims P3 and P7 of ``sgd-svm``)."""
    scale = reference.abs().max()
    gap = (value - reference).abs().max()
    return float(gap / scale) if scale > 0 else float(gap)


@dataclass
class Reconstruction:
    """Outputs at the query points: the trained model's, and the path-kernel sums that rebuild it."""

    initial: torch.Tensor     # f_0(x_q), (n_q, C)
    final: torch.Tensor       # f_T(x_q)
    euler: torch.Tensor       # f_0 + Σ_t J(x; θ_t) Δθ_t           = f_0 − η Σ_t Σ_i K_t(x, x_i) ℓ'_{t,i}
    trapezoid: torch.Tensor   # f_0 + Σ_t ½ (J(x; θ_t) + J(x; θ_{t+1})) Δθ_t
    train_loss: list

    def relative_error(self, which: str = "euler") -> float:
        """‖reconstruction − f_T‖ / ‖f_T − f_0‖ over the query points."""
        rebuilt = getattr(self, which)
        return float((rebuilt - self.final).norm() / (self.final - self.initial).norm())


def train_and_reconstruct(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          x_train: torch.Tensor, y_train: torch.Tensor, x_query: torch.Tensor, lr: float,
                          steps: int, batches: list[torch.Tensor] | None = None) -> Reconstruction:
    """Train by gradient descent θ ← θ − η ∇L(θ) (full batch, or the given minibatch index per step: SGD,
    Domingos's Remark 5) and accumulate the Euler and trapezoid path-kernel reconstructions at ``x_query``
    with Jacobian-vector products. ``loss_fn(outputs, targets)`` is the training loss. The model is updated."""
    theta, forward = flat_parameters(model)
    theta = theta.clone()
    initial = forward(theta, x_query).detach()
    euler = initial.clone()
    trapezoid = initial.clone()
    losses = []
    for step in range(steps):
        idx = batches[step] if batches is not None else slice(None)
        theta_req = theta.detach().requires_grad_(True)
        loss = loss_fn(forward(theta_req, x_train[idx]), y_train[idx])
        (grad,) = torch.autograd.grad(loss, theta_req)
        losses.append(loss.item())
        if not torch.isfinite(loss):
            break
        delta = -lr * grad
        _, change_here = jvp(lambda t: forward(t, x_query), (theta,), (delta,))
        _, change_next = jvp(lambda t: forward(t, x_query), (theta + delta,), (delta,))
        euler += change_here
        trapezoid += 0.5 * (change_here + change_next)
        theta = theta + delta
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
    final = forward(theta, x_query).detach()
    return Reconstruction(initial, final, euler.detach(), trapezoid.detach(), losses)


@dataclass
class PathKernel:
    """Accumulated kernels of a scalar-output model: K = Σ_t η K_t (the path kernel, Euler rule) and
    A = −Σ_t η K_t ℓ'_t, both (n_q, n_train); and the train–train path-kernel Gram (n_train, n_train)."""

    query_train: torch.Tensor
    weighted: torch.Tensor
    train_train: torch.Tensor
    initial: torch.Tensor
    final: torch.Tensor

    def alpha(self) -> torch.Tensor:
        """α_i(x) = A(x, x_i) / K(x, x_i): the K-weighted time average of −ℓ'_i, one per (query, train) pair."""
        return self.weighted / self.query_train

    def kernel_machine(self, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """β(x) + Σ_i α_i(x) K(x, x_i) with β = f_0; pass another α (e.g. frozen across x) to compare."""
        alpha = self.alpha() if alpha is None else alpha
        return self.initial + (alpha * self.query_train).sum(dim=1, keepdim=True)

    def frozen_alpha(self) -> torch.Tensor:
        """α_i(x) replaced by its mean over the queries, ᾱ_i = mean_x α_i(x), broadcast to (n_q, n_train):
        Su's "the x-dependence of α_i may be negligible" taken literally."""
        return self.alpha().mean(dim=0, keepdim=True).expand(len(self.initial), -1)

    def least_squares_alpha(self) -> torch.Tensor:
        """A pole-free way to freeze α: one coefficient per training point that best turns the path kernel into
        the accumulated weights over all queries, ᾱ_i = argmin_a Σ_x (A(x, x_i) − a K(x, x_i))²
        = Σ_x A K / Σ_x K², broadcast to (n_q, n_train). Queries where K(x, x_i) ≈ 0 (the poles of A/K)
        get weight K² ≈ 0 instead of dominating (claim P6 of ``sgd-svm``)."""
        k = self.query_train
        return ((self.weighted * k).sum(0) / (k * k).sum(0)).unsqueeze(0).expand(len(self.initial), -1)

    def alpha_variation(self, floor: float = 0.1) -> torch.Tensor:
        """How much α_i(x) = A/K depends on x away from its poles: per training point (n_train,), the
        coefficient of variation std_x α_i(x) / mean_x |α_i(x)| over the queries with
        |K(x, x_i)| ≥ floor · max_x |K(x, x_i)| (population std; claim P6 of ``sgd-svm``)."""
        k, alpha = self.query_train, self.alpha()
        keep = (k.abs() >= floor * k.abs().max(dim=0, keepdim=True).values).to(alpha.dtype)
        count = keep.sum(0)
        mean = (alpha * keep).sum(0) / count
        std = ((((alpha - mean) * keep) ** 2).sum(0) / count).sqrt()
        return std / ((alpha.abs() * keep).sum(0) / count)

    def cancellation(self) -> torch.Tensor:
        """Σ_i |α_i(x) K(x, x_i)| / |Σ_i α_i(x) K(x, x_i)| per query (n_q,): how much larger the kernel
        machine's terms are than the change of the output they add up to. A relative change ε of every
        coefficient can move the output by up to this factor times ε."""
        terms = self.weighted
        return terms.abs().sum(1) / terms.sum(1).abs()

    def freeze_error_split(self, alpha: torch.Tensor, floor: float = 0.1) -> tuple[float, float]:
        """Where a frozen α (n_q, n_train) loses: the gap to the exact kernel machine,
        Σ_i (α_i K(x, x_i) − A(x, x_i)), split into the pairs away from the poles, |K(x, x_i)| ≥ floor ·
        max_x |K(x, x_i)| (as in :meth:`alpha_variation`), and the near-pole rest; each part's norm over the
        queries ÷ ‖f_T − f_0‖ (claim P6)."""
        k = self.query_train
        away = k.abs() >= floor * k.abs().max(dim=0, keepdim=True).values
        gap = alpha * k - self.weighted
        scale = (self.final - self.initial).norm()
        return (float((gap * away).sum(1).norm() / scale), float((gap * ~away).sum(1).norm() / scale))

    def relative_error(self, rebuilt: torch.Tensor, queries: torch.Tensor | None = None) -> float:
        """‖rebuilt − f_T‖ / ‖f_T − f_0‖ over the queries (as :meth:`Reconstruction.relative_error`), or over the
        queries selected by the boolean mask ``queries`` (n_q,)."""
        rows = slice(None) if queries is None else queries
        return float((rebuilt[rows] - self.final[rows]).norm() / (self.final[rows] - self.initial[rows]).norm())


def accumulate_path_kernel(model: nn.Module, loss_derivative: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           x_train: torch.Tensor, y_train: torch.Tensor, x_query: torch.Tensor, lr: float,
                           steps: int, linearised: bool = False) -> PathKernel:
    """Full-batch GD on a scalar-output model, building the tangent-kernel Grams at every step (costly: use
    small problems). ``loss_derivative(f, y)`` returns ℓ'_i = ∂L/∂f(x_i) per training point (n_train,).

    Per step t: K += η K_t(x_q, x_i), A += −η K_t(x_q, x_i) ℓ'_{t,i}, G += η K_t(x_i, x_j), θ ← θ − η Σ_i ℓ'_{t,i}
    ∇f(x_i). ``linearised=True`` trains the model's first-order Taylor expansion at θ_0 instead,
    f_lin(x; θ) = f(x; θ_0) + J(x; θ_0)(θ − θ_0), whose tangent kernel is K_0 at every step, so that
    α_i(x) = A/K is the time average of −ℓ'_i whatever x (the null control of claim P6 in ``sgd-svm``); the
    module is then left at θ_0. Otherwise the module ends at θ_T."""
    n_q, n_t = len(x_query), len(x_train)
    dtype = x_train.dtype
    query_train = torch.zeros(n_q, n_t, dtype=dtype, device=x_train.device)
    weighted = torch.zeros(n_q, n_t, dtype=dtype, device=x_train.device)
    train_train = torch.zeros(n_t, n_t, dtype=dtype, device=x_train.device)
    theta, forward = flat_parameters(model)
    theta0 = theta.clone()
    initial = forward(theta, x_query).detach()
    initial_train = forward(theta, x_train).squeeze(-1).detach()
    both = torch.cat([x_query, x_train])
    j0 = scalar_jacobian(model, both, theta) if linearised else None
    for _ in range(steps):
        j = j0 if linearised else scalar_jacobian(model, both, theta)               # (n_q + n_t, P)
        jq, jt = j[:n_q], j[n_q:]
        k_qt = jq @ jt.T
        if linearised:
            f_train = initial_train + jt @ (theta - theta0)
        else:
            f_train = forward(theta, x_train).squeeze(-1).detach()
        d_loss = loss_derivative(f_train, y_train)
        query_train += lr * k_qt
        weighted += -lr * k_qt * d_loss
        train_train += lr * (jt @ jt.T)
        theta = theta - lr * (jt.T @ d_loss)    # ∇L = Σ_i ℓ'_i ∇f(x_i)
    if linearised:
        final = initial + (j0[:n_q] @ (theta - theta0)).unsqueeze(-1)
    else:
        final = forward(theta, x_query).detach()
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta, model.parameters())
    return PathKernel(query_train, weighted, train_train, initial, final)


def accumulate_contributions(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                             x_train: torch.Tensor, y_train: torch.Tensor, x_query: torch.Tensor, lr: float,
                             steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-training-point terms of the Euler path-kernel sum for a vector-output model:

        contribution[q, i, c] = −η Σ_t Σ_d K_t(x_q, x_i)[c, d] ℓ'_{t,i,d},   ℓ'_{t,i} = ∂L/∂f(x_i) at θ_t,

    so f_0(x_q) + Σ_i contribution[q, i] is the Euler reconstruction. Returns (f_0(x_q), contributions).
    Builds the query–train Gram each step: keep the number of queries small."""
    theta, forward = flat_parameters(model)
    initial = forward(theta, x_query).detach()
    query_jacobian = jacrev(lambda t: forward(t, x_query))                        # (n_q, C, P)

    def sample_gradient(t, xi, d_loss_i):
        """Σ_d ℓ'_{i,d} ∇_θ f_d(x_i): one vector–Jacobian product per sample."""
        _, pullback = vjp(lambda th: forward(th, xi.unsqueeze(0)).squeeze(0), t)
        return pullback(d_loss_i)[0]

    per_sample = vmap(sample_gradient, in_dims=(None, 0, 0))
    contributions = torch.zeros(len(x_query), len(x_train), initial.shape[-1], dtype=initial.dtype,
                                device=initial.device)
    for _ in range(steps):
        outputs = forward(theta, x_train).detach().requires_grad_(True)
        (d_loss,) = torch.autograd.grad(loss_fn(outputs, y_train), outputs)       # ℓ'_t, (n, C)
        gradients = per_sample(theta, x_train, d_loss)                             # (n, P)
        contributions += -lr * torch.einsum("qcp,ip->qic", query_jacobian(theta), gradients)
        theta = theta - lr * gradients.sum(0)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
    return initial, contributions


@dataclass
class PathGram:
    """Accumulated C × C-block kernels of a vector-output model (:func:`accumulate_path_gram`):
    the path kernel K = Σ_t η K_t between queries and training points (n_q, n_t, C, C) and among training
    points (n_t, n_t, C, C); the tangent kernel at θ_0 on the same pairs; the per-training-point terms
    contribution[q, i, c] = −η Σ_t Σ_d K_t(x_q, x_i)[c, d] ℓ'_{t,i,d} (n_q, n_t, C); outputs at θ_0 and θ_T."""

    query_train: torch.Tensor
    train_train: torch.Tensor
    initial_query_train: torch.Tensor
    initial_train_train: torch.Tensor
    contributions: torch.Tensor
    initial: torch.Tensor          # f_0(x_q), (n_q, C)
    final: torch.Tensor            # f_T(x_q)
    initial_train: torch.Tensor    # f_0(x_i), (n_t, C)
    final_train: torch.Tensor      # f_T(x_i)

    def relative_error(self, rebuilt: torch.Tensor) -> float:
        """‖rebuilt − f_T‖ / ‖f_T − f_0‖ over the queries (as :meth:`Reconstruction.relative_error`)."""
        return float((rebuilt - self.final).norm() / (self.final - self.initial).norm())


def accumulate_path_gram(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         x_train: torch.Tensor, y_train: torch.Tensor, x_query: torch.Tensor, lr: float,
                         steps: int, method: str = "auto", train_gram: bool = True) -> PathGram:
    """Full-batch GD θ ← θ − η ∇L(θ) on ``loss_fn(f(x_train), y_train)``, accumulating at every step t the
    tangent-kernel Gram K_t of [queries; training points] against the training points (``tangent_kernel_gram``,
    factorised when the model allows it):

        K += η K_t,   contribution[q, i] += −η K_t(x_q, x_i) ℓ'_{t,i},   ℓ'_{t,i} = ∂L/∂f(x_i) at θ_t,

    so f_0(x_q) + Σ_i contribution[q, i] is the Euler reconstruction of :func:`train_and_reconstruct` and
    K(x_i, x_j) is the path kernel's training Gram (claims P9, P10 and the retrieval of ``sgd-svm``). Works on
    the model's device and dtype; the module is trained in place (it ends at θ_T). ``train_gram=False`` skips
    the training Gram (its fields are then empty: (0, n_t, C, C)), which is most of the cost."""
    params = list(model.parameters())
    n_q = len(x_query)
    both = torch.cat([x_query, x_train]) if train_gram else x_query
    with torch.no_grad():
        initial, initial_train = model(x_query), model(x_train)
    path = contributions = first = None
    for _ in range(steps):
        gram = tangent_kernel_gram(model, both, x_train, method=method)            # (n_q + n_t, n_t, C, C)
        outputs = model(x_train)
        loss = loss_fn(outputs, y_train)
        d_loss, *grads = torch.autograd.grad(loss, [outputs] + params)            # ℓ'_t (n_t, C), ∇L
        if path is None:
            first, path = gram.clone(), torch.zeros_like(gram)
            contributions = torch.zeros(n_q, len(x_train), gram.shape[-1], dtype=gram.dtype, device=gram.device)
        path += lr * gram
        contributions -= lr * torch.einsum("qicd,id->qic", gram[:n_q], d_loss)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
    with torch.no_grad():
        final, final_train = model(x_query), model(x_train)
    return PathGram(path[:n_q], path[n_q:], first[:n_q], first[n_q:], contributions, initial, final,
                    initial_train, final_train)
