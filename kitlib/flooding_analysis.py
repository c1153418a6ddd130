"""Su's analysis of flooding (kexue.fm/archives/7643) and the experiments that check it, chapter ``flooding``.

Once the training loss sits at the flood level b, full-batch flooding alternates one descent step and one
ascent step. With g = ∇L and H = ∇²L, a descent step ε₁ then an ascent step ε₂ (or ascent first: the same to
this order) move θ by

    θ_{n+1} − θ_{n−1} = −(ε₁ − ε₂) g − ε₁ε₂ H g + O(ε³),     2Hg = ∇‖g‖²,

so equal steps do gradient descent on ‖∇L‖² with rate ε²/2 (Su), and ε₁ > ε₂ is a step ε₁ − ε₂ of gradient
descent on L + λ‖∇L‖² with λ = ε₁ε₂ / (2(ε₁ − ε₂)). :func:`flooded_gradient_descent` runs the setting of the
derivation (plain full-batch gradient descent, no momentum, no BatchNorm) on many runs at once and records
‖∇L‖² at every step, with a b = 0 twin of every flooded run as its control. With ``probe_every`` it also
tests the prediction step by step (claim F6): at a probe step t it computes u = ∇‖∇L‖²(θ_t) by double
backprop and, two steps later, the displacement Δ = θ_{t+2} − θ_t, recording

    cos(Δ, −u)   and   ρ = ⟨Δ, −u⟩ / ((ε²/2)‖u‖²)        (Su: Δ ≈ −(ε²/2)u, so cos ≈ 1 and ρ ≈ 1

for a descent/ascent pair). ρ is the component of Δ along −u only; cos says how much of Δ that is. Two
descent steps (the b = 0 twin) give Δ = −2εg + ε²Hg + O(ε³), so

    ρ_twin = 8⟨g, Hg⟩ / (ε‖2Hg‖²) − 1 + O(ε) = 2⟨g, Hg⟩ / (ε‖Hg‖²) − 1 + O(ε);

the first term is ≥ 2/(ελ_max) ≥ 1 for a PSD Hessian while GD is stable (λ_max ≤ 2/ε), and for g along one
eigenvector ρ_twin = 2/(ελ) − 1, which is ≈ 0 at the edge of stability λ ≈ 2/ε.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .autodiff import LossFn, grad_norm_sq_gradient, gradient, hessian_vector_product
from .data import Split
from .flooding import flooded_loss, member_cross_entropy
from .models import BatchedMLP
from .train import check_finite, progress_bar


def descent_ascent(loss_fn: LossFn, theta: torch.Tensor, step_descent: float, step_ascent: float,
                   descent_first: bool = True) -> torch.Tensor:
    """θ after one gradient-descent step (size ε₁) and one gradient-ascent step (size ε₂), in either order."""
    signed_steps = [(-step_descent), (+step_ascent)]
    if not descent_first:
        signed_steps.reverse()
    for signed in signed_steps:
        theta = theta + signed * gradient(loss_fn, theta)
    return theta.detach()


def two_step_relative_error(loss_fn: LossFn, theta: torch.Tensor, step: float, descent_first: bool = True) -> float:
    """Relative error of Su's prediction for two flooded steps of size ε (claim F2):

        ρ(ε) = ‖Δθ + (ε²/2)∇‖∇L‖²‖ / ‖(ε²/2)∇‖∇L‖²‖,   Δθ = descent_ascent(θ, ε, ε) − θ,

    which is O(ε) when the prediction is right (use float64: Δθ ~ ε² cancels in float32)."""
    predicted = -(step**2) / 2 * grad_norm_sq_gradient(loss_fn, theta)
    moved = descent_ascent(loss_fn, theta, step, step, descent_first=descent_first) - theta
    return ((moved - predicted).norm() / predicted.norm()).item()


def predicted_displacement(loss_fn: LossFn, theta: torch.Tensor, step_descent: float,
                           step_ascent: float) -> torch.Tensor:
    """Second-order prediction of the two-step displacement: −(ε₁ − ε₂) g − ε₁ε₂ H g."""
    g = gradient(loss_fn, theta)
    return -(step_descent - step_ascent) * g - step_descent * step_ascent * hessian_vector_product(loss_fn, theta, g)


def gradient_penalty_weight(step_descent: float, step_ascent: float) -> float:
    """λ = ε₁ε₂ / (2(ε₁ − ε₂)): descent ε₁ + ascent ε₂ ≈ a step ε₁ − ε₂ on L + λ‖∇L‖² (needs ε₁ > ε₂)."""
    if step_descent <= step_ascent:
        raise ValueError("the equivalence needs a descent step larger than the ascent step")
    return step_descent * step_ascent / (2 * (step_descent - step_ascent))


def smooth_test_loss(dim: int = 5, n: int = 40, seed: int = 0) -> LossFn:
    """A smooth non-quadratic loss of θ ∈ R^dim for derivative checks (float64):
    L(θ) = mean_i log(1 + exp(−y_i x_iᵀθ)) + 0.1 Σ_j θ_j⁴, with fixed random (x_i, y_i)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return F.softplus(-y * (x @ theta)).mean() + 0.1 * (theta**4).sum()

    return loss


# -- the mechanism in the setting of the derivation: plain full-batch gradient descent ---------------------
@dataclass
class GradientTrace:
    """Per-step training loss L and squared gradient norm ‖∇L‖² of runs indexed [step, split, level]."""

    flood_levels: np.ndarray      # (B,)
    loss: np.ndarray              # (steps, S, B): the loss each step's sign was decided on
    grad_norm_sq: np.ndarray      # (steps, S, B): ‖∇L‖² = ‖∇L̃‖² at that step (flooding only flips the sign)
    probe_steps: np.ndarray | None = None    # (P,): steps t at which u = ∇‖∇L‖²(θ_t) was computed
    probe_cosine: np.ndarray | None = None   # (P, S, B): cos(θ_{t+2} − θ_t, −u)
    probe_ratio: np.ndarray | None = None    # (P, S, B): ⟨θ_{t+2} − θ_t, −u⟩ / ((ε²/2)‖u‖²)


def flooded_gradient_descent(splits: Sequence[Split], flood_levels: Sequence[float], *, width: int, depth: int,
                             steps: int, lr: float, device: torch.device | str = "cpu",
                             model: BatchedMLP | None = None, probe_every: int = 0, progress: bool = True,
                             desc: str = "gradient descent") -> GradientTrace:
    """θ ← θ − ε ∇L̃, L̃ = |L − b| + b, full batch, for one BatchNorm-free MLP per (split, level b) — the
    setting of Su's derivation — trained at once as a :class:`BatchedMLP` (member s·B + j: split s, level j).

    All levels of a split start from the *same* initialisation (member s·B's), so a flooded run and its
    b = 0 twin follow the same path until the first step whose loss is below b. ``model`` (optional, S·B
    members) supplies the initialisation as is. ``probe_every > 0``: every that many steps, the two-step
    test of Su's prediction described in the module docstring. Returns a :class:`GradientTrace`;
    uses cross-entropy."""
    device = torch.device(device)
    S, B = len(splits), len(flood_levels)
    x = torch.stack([sp.x_train for sp in splits]).repeat_interleave(B, dim=0).to(device)
    y = torch.stack([sp.y_train for sp in splits]).repeat_interleave(B, dim=0).to(device)
    levels = torch.tensor(list(flood_levels), dtype=torch.float32, device=device).repeat(S)
    if model is None:
        model = BatchedMLP(S * B, x.shape[-1], splits[0].num_classes, width=width, depth=depth,
                           batch_norm=False)
        with torch.no_grad():  # one initialisation per split, shared by its levels
            for p in model.parameters():
                p.copy_(p[::B].repeat_interleave(B, dim=0))
    model = model.to(device)
    params = list(model.parameters())
    losses, grad_sq = [], []
    flat = lambda tensors: torch.cat([t.detach().flatten(1) for t in tensors], dim=1)  # noqa: E731 (R, P)
    probe_steps, cosines, ratios, pending = [], [], [], None
    for step in progress_bar(range(steps), desc, progress):
        if pending is not None and step == pending[0] + 2:
            moved, u = flat(params) - pending[1], pending[2]
            along = -(moved * u).sum(1)
            cosines.append(along / (moved.norm(dim=1) * u.norm(dim=1)))
            ratios.append(along / (lr**2 / 2 * u.pow(2).sum(1)))
            probe_steps.append(pending[0])
            pending = None
        probe = probe_every > 0 and step % probe_every == 0 and step + 2 < steps
        loss = member_cross_entropy(model(x), y)                       # (S·B,)
        check_finite(loss, step)
        grads = torch.autograd.grad(flooded_loss(loss, levels).sum(), params, create_graph=probe)
        if probe:  # u_r = ∇‖∇L_r‖² for every member r at once (members share no parameters)
            norm_sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
            pending = (step, flat(params), flat(torch.autograd.grad(norm_sq.sum(), params)))
            grads = [g.detach() for g in grads]
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
        losses.append(loss.detach())
        grad_sq.append(sum(g.pow(2).flatten(1).sum(1) for g in grads))
    shape = (steps, S, B)
    probes = {}
    if probe_steps:
        probes = {"probe_steps": np.asarray(probe_steps),
                  "probe_cosine": torch.stack(cosines).cpu().numpy().reshape(-1, S, B),
                  "probe_ratio": torch.stack(ratios).cpu().numpy().reshape(-1, S, B)}
    return GradientTrace(np.asarray(flood_levels, dtype=float), torch.stack(losses).cpu().numpy().reshape(shape),
                         torch.stack(grad_sq).cpu().numpy().reshape(shape), **probes)
