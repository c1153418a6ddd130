"""What a WGAN critic minimises, and the W1 estimate it reports (chapter ``wgan``, kexue.fm/archives/8244).

WGAN: min_G max_{‖D‖_L ≤ 1} E_P[D(x)] − E_Q[D(G(z))], the Kantorovich–Rubinstein dual of W1(P, Q_G). The
Lipschitz constraint is imposed in two ways (Stanczuk et al. 2021, after Mallasto et al. 2019):

- gradient penalty (WGAN-GP, Gulrajani et al. 2017): λ E_x̂ (‖∇D(x̂)‖ − 1)², x̂ = a x + (1 − a) x̃, a ~ U[0, 1]
  (the one-sided "LP" variant of Petzka et al. 2018 penalises only max(0, ‖∇D‖ − 1)²);
- the c-transform: on the fake side D is replaced by φ^c(y) = min_i [‖x_i − y‖ − φ(x_i)] over the real batch,
  so the pair (φ, φ^c) is feasible by construction and the batch value never exceeds the batch W1
  (:func:`kitlib.ot.c_transform_value`).

A third objective with the same penalty but no W1 in it, for the control "the Lipschitz penalty, not W1, is
what matters": the non-saturating GAN (Goodfellow et al. 2014) with the WGAN-GP penalty ("ns-gp"); the
discriminator D outputs a logit and minimises E_P softplus(−D) + E_Q softplus(D) + λ GP, the generator
minimises E_z softplus(−D(G(z))); "ns" is the same GAN without the penalty.

The zero critic φ ≡ 0 is the floor of every c-transform number: its value mean_j min_i ‖x_i − y_j‖ (the mean
distance from a fake point to its nearest real one) is already close to W1 on many sets.
"""

from __future__ import annotations

import torch
from torch import nn

from .ot import c_transform_value

METHODS: tuple[str, ...] = ("gp", "ctransform", "ns-gp", "ns")


def check_method(method: str) -> None:
    """Refuse a critic method other than "gp" (WGAN-GP), "ctransform", "ns-gp" (non-saturating GAN + GP) and
    "ns" (the non-saturating GAN without a penalty)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def input_gradient_norms(critic: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """‖∇_x D(x)‖ at each point: points (n, ...) → (n,), one norm per row, with a graph through it
    (``create_graph``), so penalties built on it can be trained (double backward)."""
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    return grad.flatten(1).norm(dim=1)


def central_difference_gradient_norms(critic: nn.Module, points: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """‖∇_x D(x)‖ by central differences, ∂D/∂x_k ≈ [D(x + h e_k) − D(x − h e_k)] / 2h, without autograd:
    points (n, d) → (n,). Truncation error O(h²), rounding O(ε/h) (use float64). The independent check of
    :func:`input_gradient_norms` in the chapter (claim W9)."""
    n, d = points.shape
    shifts = step * torch.eye(d, dtype=points.dtype, device=points.device)
    with torch.no_grad():
        plus = critic((points[:, None, :] + shifts).reshape(n * d, d)).reshape(n, d)
        minus = critic((points[:, None, :] - shifts).reshape(n * d, d)).reshape(n, d)
    return ((plus - minus) / (2 * step)).norm(dim=1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator,
                     one_sided: bool = False) -> torch.Tensor:
    """E (‖∇D(x̂)‖ − 1)² at x̂ = a·real + (1 − a)·fake, a ~ U[0, 1] per pair (WGAN-GP); with ``one_sided``
    E max(0, ‖∇D(x̂)‖ − 1)² (WGAN-LP), zero wherever D is 1-Lipschitz. real, fake: (n, ...) → scalar."""
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    a = torch.rand(shape, generator=generator).to(real.device, real.dtype)
    norms = input_gradient_norms(critic, a * real + (1 - a) * fake.detach())
    excess = norms - 1
    if one_sided:
        excess = excess.clamp(min=0)
    return excess.pow(2).mean()


def gp_critic_loss(critic, real, fake, generator, penalty_weight: float = 10.0) -> torch.Tensor:
    """−(E D(real) − E D(fake)) + λ GP: what the WGAN-GP critic minimises."""
    gap = critic(real).mean() - critic(fake.detach()).mean()
    return -gap + penalty_weight * gradient_penalty(critic, real, fake, generator)


def ns_gp_discriminator_loss(critic, real, fake, generator, penalty_weight: float = 10.0) -> torch.Tensor:
    """E_P softplus(−D) + E_Q softplus(D) + λ GP: the non-saturating GAN's discriminator loss (−log σ(D) on real,
    −log(1 − σ(D)) on fake, D a logit) with the WGAN-GP penalty at interpolates; no W1 in it."""
    logits_real, logits_fake = critic(real), critic(fake.detach())
    cross_entropy = nn.functional.softplus(-logits_real).mean() + nn.functional.softplus(logits_fake).mean()
    if penalty_weight == 0:   # the plain non-saturating GAN: skip the double backward
        return cross_entropy
    return cross_entropy + penalty_weight * gradient_penalty(critic, real, fake, generator)


def batch_cost(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Euclidean cost ‖real_i − fake_j‖, shape (m, n), images flattened (exact differences, no ‖a‖² + ‖b‖² −
    2ab shortcut, so equal points cost exactly 0)."""
    return torch.cdist(real.flatten(1), fake.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")


def ctransform_critic_loss(critic, real, fake) -> torch.Tensor:
    """−[mean φ(real) + mean φ^c(fake)], φ^c over the real batch: what the c-transform critic minimises."""
    return -c_transform_value(critic(real).squeeze(-1), batch_cost(real, fake.detach()))


def critic_loss(method: str, critic, real, fake, generator, penalty_weight: float = 10.0) -> torch.Tensor:
    """:func:`gp_critic_loss` (``"gp"``), :func:`ctransform_critic_loss` (``"ctransform"``) or
    :func:`ns_gp_discriminator_loss` (``"ns-gp"``; ``"ns"`` with λ = 0)."""
    check_method(method)
    if method == "gp":
        return gp_critic_loss(critic, real, fake, generator, penalty_weight)
    if method in ("ns-gp", "ns"):
        return ns_gp_discriminator_loss(critic, real, fake, generator, penalty_weight if method == "ns-gp" else 0)
    return ctransform_critic_loss(critic, real, fake)


def critic_estimate(method: str, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """The W1 estimate a critic reports on two sets: E_P D − E_Q D ("gp"), or the c-transform dual value
    mean φ(real) + mean φ^c(fake) with φ^c over all of ``real`` ("ctransform"). For "ns-gp" and "ns" the
    same difference of means of the logit, which estimates no distance (kept so that histories have one shape)."""
    check_method(method)
    with torch.no_grad():
        if method != "ctransform":
            return float(critic(real).mean() - critic(fake).mean())
        return float(c_transform_value(critic(real).squeeze(-1), batch_cost(real, fake)))


def zero_critic_estimate(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The c-transform estimate of the zero critic φ ≡ 0: mean_j min_i ‖real_i − fake_j‖, the mean distance
    from a fake point to its nearest real one. No training at all reaches it; it is the null control of every
    c-transform number in the chapter (the gradient-penalty estimate of the zero critic is 0)."""
    with torch.no_grad():
        return float(batch_cost(real, fake).min(dim=0).values.mean())
