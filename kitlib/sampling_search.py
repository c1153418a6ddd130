"""Optimisation as sampling (Su, kexue.fm/archives/7521; Welleck & Cho's MLE-guided search, MGS).

The update is a random variable with the Boltzmann density of the loss change,

$$p(\\Delta\\theta\\mid\\theta)\\propto e^{-[l(\\theta+\\Delta\\theta)-l(\\theta)]/\\alpha}\\,\\times\\text{(locality)},$$

and the step is its mean. Without a gradient the mean is estimated by self-normalised importance sampling
(SNIS) from a proposal $q$: $\\Delta\\theta^*\\approx\\sum_i\\tilde w_i\\Delta\\theta_i$ with
$\\tilde w_i\\propto e^{-[l(\\theta+\\Delta\\theta_i)-l(\\theta)]/\\alpha}/q(\\Delta\\theta_i)$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import integrate


def snis_weights(loss_changes: torch.Tensor, alpha: float, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised weights $\\tilde w_i\\propto\\exp(-\\Delta l_i/\\alpha-\\log q_i)$ (softmax over the last
    dimension). ``log_q=None`` is a proposal whose density is constant over the samples."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    logits = -loss_changes / alpha
    if log_q is not None:
        logits = logits - log_q
    return logits.softmax(-1)


def snis_mean(deltas: torch.Tensor, loss_changes: torch.Tensor, alpha: float,
              log_q: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """SNIS estimate of $\\mathbb E_p[\\Delta\\theta]$ from samples (N, d) and the effective sample size
    $1/\\sum_i\\tilde w_i^2$."""
    weights = snis_weights(loss_changes, alpha, log_q)
    return weights @ deltas, float(1 / (weights**2).sum())


def ball_mean_norm(gradient_norm: float, radius: float, alpha: float, dim: int) -> float:
    """Exact $\\|\\mathbb E_p[\\Delta\\theta]\\|$ for a linear loss $g^\\top\\Delta\\theta$ restricted to the ball
    $\\|\\Delta\\theta\\|\\le\\varepsilon$: the component along $-g$ has density
    $\\propto(\\varepsilon^2-x^2)^{(d-1)/2}e^{\\|g\\|x/\\alpha}$ on $[-\\varepsilon,\\varepsilon]$ (quadrature).
    Limits: $\\to\\varepsilon$ as $\\alpha\\to0$; $\\approx\\varepsilon^2\\|g\\|/((d+2)\\alpha)$ for large $\\alpha$."""
    rate = gradient_norm / alpha

    def density(x):  # shifted by the largest exponent, rate·radius, to avoid overflow
        return (radius**2 - x**2) ** ((dim - 1) / 2) * math.exp(rate * (x - radius))

    points = [radius * (1 - 1 / max(rate * radius, 1.0))] if rate * radius > 1 else None
    mass = integrate.quad(density, -radius, radius, points=points, limit=200, epsabs=0, epsrel=1e-11)[0]
    first = integrate.quad(lambda x: x * density(x), -radius, radius, points=points, limit=200, epsabs=0,
                           epsrel=1e-11)[0]
    return first / mass


def step_loss_mean_length(sigma: float, alpha: float) -> float:
    """Exact $\\|\\mathbb E_p[\\Delta\\theta]\\|$ for a loss without a useful gradient, the 0-1 step
    $l(\\theta+\\Delta\\theta)-l(\\theta)=\\mathbb 1[\\hat g^\\top\\Delta\\theta>0]$, with the Gaussian locality factor
    $e^{-\\|\\Delta\\theta\\|^2/2\\sigma^2}$. Along $\\hat g$,
    $u=\\hat g^\\top\\Delta\\theta\\sim\\mathcal N(0,\\sigma^2)$ is weighted 1 below zero and $e^{-1/\\alpha}$ above, so

    $$\\mathbb E_p[\\Delta\\theta]=-\\sigma\\sqrt{2/\\pi}\\,\\tanh\\big(1/(2\\alpha)\\big)\\,\\hat g:$$

    the mean of the better half-space as $\\alpha\\to0$, $\\approx\\sigma/(\\sqrt{2\\pi}\\,\\alpha)$ as
    $\\alpha\\to\\infty$. Used by the sampling-optimisation chapter (O4)."""
    if alpha <= 0 or sigma <= 0:
        raise ValueError(f"sigma and alpha must be positive, got {sigma}, {alpha}")
    return sigma * math.sqrt(2 / math.pi) * math.tanh(1 / (2 * alpha))


def uniform_ball(count: int, dim: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform samples in the ball of radius ``radius`` (float64): direction × radius · U^{1/d}."""
    direction = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    direction /= direction.norm(dim=1, keepdim=True)
    return direction * radius * torch.rand(count, 1, generator=generator, dtype=torch.float64) ** (1 / dim)


def mgs_log_proposal(delta: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The log proposal density of the official MGS code (``wellecks/mgs``, ``guided/utils.py``):

    $$\\log q=\\log\\big(\\tfrac12e^{-\\frac12\\Delta\\cdot\\Delta}+\\tfrac12e^{-\\frac12\\Delta\\cdot\\Delta+\\Delta\\cdot g
    -\\frac12g\\cdot g}\\big),$$

    over the last dimension of ``delta`` (..., d), with $g$ the guiding direction. It is the log-density of
    $\\tfrac12\\mathcal N(0,I)+\\tfrac12\\mathcal N(g,I)$ plus $\\tfrac d2\\log2\\pi$, whatever the noise scale
    the candidates were drawn with."""
    square = -0.5 * (delta * delta).sum(-1)
    shifted = square + (delta * direction).sum(-1) - 0.5 * (direction * direction).sum()
    return torch.logaddexp(square, shifted) - math.log(2)


def gaussian_mixture_log_density(delta: torch.Tensor, centre: torch.Tensor, sigma: float) -> torch.Tensor:
    """log of $\\tfrac12\\mathcal N(\\Delta;0,\\sigma^2I)+\\tfrac12\\mathcal N(\\Delta;\\mu,\\sigma^2I)$ (the MGS
    proposal with its true noise scale), over the last dimension."""
    dim = delta.shape[-1]
    norm = -0.5 * dim * math.log(2 * math.pi * sigma**2)
    zero = norm - 0.5 * (delta**2).sum(-1) / sigma**2
    guided = norm - 0.5 * ((delta - centre) ** 2).sum(-1) / sigma**2
    return torch.logaddexp(zero, guided) - math.log(2)


# --- searching for a classifier with a non-differentiable loss -------------------------------------------------

@dataclass
class SearchTrace:
    """0-1 training error after each step, and the number of 0-1 loss evaluations spent by then."""

    evaluations: list[int]
    errors: list[float]


def zero_one_error(weights: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-1 error of linear classifiers, batched: weights (K, d_in + 1, classes) → errors (K,)."""
    scores = features @ weights[:, :-1] + weights[:, -1:, :]
    return (scores.argmax(-1) != labels).double().mean(-1)


def cross_entropy_gradient(weights: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean cross-entropy of one linear classifier (d_in + 1, classes), by autograd."""
    weights = weights.detach().requires_grad_(True)
    scores = features @ weights[:-1] + weights[-1]
    torch.nn.functional.cross_entropy(scores, labels).backward()
    return weights.grad


def sampling_search(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int, candidates: int,
                    sigma: float, alpha: float, generator: torch.Generator, guide_step: float | None = None,
                    official_density: bool = True, task_loss=None, guide_gradient=None,
                    components: str = "mixture") -> SearchTrace:
    """Minimise the 0-1 error of a linear classifier by steps $\\theta\\leftarrow\\theta+\\sum_k\\tilde w_k\\Delta_k$.

    Unguided (``guide_step=None``): random search, $\\Delta_k\\sim\\mathcal N(0,\\sigma^2I)$, SNIS weights with a
    constant proposal. Guided (MGS): half the candidates from $\\mathcal N(\\mu,\\sigma^2I)$ with
    $\\mu=-\\eta\\nabla\\mathrm{CE}$ (``guide_step`` = η, gradient clipped to norm 1), half from
    $\\mathcal N(0,\\sigma^2I)$, weights divided by the mixture density. Each step spends ``candidates``
    evaluations of the 0-1 error (the current error is carried over from the previous step).

    ``task_loss(weights (K, d_in + 1, classes)) -> (K,)`` replaces the 0-1 error, ``guide_gradient(theta)`` the
    cross-entropy gradient; a guided step then also counts its gradient as one evaluation. ``components``: the
    official ablations, ``"mixture"`` (even candidates guided), ``"zero"`` (``--zero-dist-only``: no candidate
    guided) or ``"guided"`` (``--mle-dist-only``: every candidate guided); the density stays the mixture's."""
    dim_in = features.shape[1]
    if task_loss is None:
        def task_loss(weights):
            return zero_one_error(weights, features, labels)
    if guide_gradient is None:
        def guide_gradient(weights):
            return cross_entropy_gradient(weights, features, labels)
    counts_gradient = guide_step is not None  # the guide costs one gradient evaluation a step
    theta = torch.zeros(dim_in + 1, classes, dtype=features.dtype)
    current = float(task_loss(theta[None])[0])
    trace = SearchTrace([0], [current])
    for _ in range(steps):
        noise = sigma * torch.randn((candidates,) + theta.shape, generator=generator, dtype=theta.dtype)
        if guide_step is None:
            deltas, log_q = noise, None
        else:
            gradient = guide_gradient(theta)
            centre = -guide_step * gradient / max(1.0, float(gradient.norm()))
            guided = {"mixture": torch.arange(candidates) % 2 == 0, "zero": torch.zeros(candidates, dtype=bool),
                      "guided": torch.ones(candidates, dtype=bool)}[components]
            deltas = noise + guided[:, None, None] * centre
            if official_density:
                log_q = mgs_log_proposal(deltas.flatten(1), centre.flatten())
            else:
                log_q = gaussian_mixture_log_density(deltas.flatten(1), centre.flatten(), sigma)
        errors = task_loss(theta + deltas)
        weights = snis_weights(errors - current, alpha, log_q)
        theta = theta + (weights[:, None, None] * deltas).sum(0)
        current = float(task_loss(theta[None])[0])
        trace.evaluations.append(trace.evaluations[-1] + candidates + int(counts_gradient))
        trace.errors.append(current)
    return trace


def evolution_strategies(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int, candidates: int,
                         sigma: float, lr: float, generator: torch.Generator, task_loss=None) -> SearchTrace:
    """OpenAI-style ES on the 0-1 error with antithetic pairs: $\\hat g=\\frac1{K\\sigma}\\sum_k
    [C(\\theta+\\sigma\\epsilon_k)-C(\\theta-\\sigma\\epsilon_k)]\\epsilon_k/2$, $\\theta\\leftarrow\\theta-\\mathrm{lr}\\,\\hat g$;
    ``candidates`` (even) evaluations a step. ``task_loss`` (K, d_in + 1, classes) → (K,) replaces the 0-1 error."""
    if candidates % 2:
        raise ValueError(f"ES uses antithetic pairs: candidates must be even, got {candidates}")
    if task_loss is None:
        def task_loss(weights):
            return zero_one_error(weights, features, labels)
    dim_in = features.shape[1]
    theta = torch.zeros(dim_in + 1, classes, dtype=features.dtype)
    trace = SearchTrace([0], [float(task_loss(theta[None])[0])])
    for _ in range(steps):
        eps = torch.randn((candidates // 2,) + theta.shape, generator=generator, dtype=theta.dtype)
        plus = task_loss(theta + sigma * eps)
        minus = task_loss(theta - sigma * eps)
        estimate = ((plus - minus)[:, None, None] * eps).sum(0) / (candidates * sigma)
        theta = theta - lr * estimate
        trace.evaluations.append(trace.evaluations[-1] + candidates)
        trace.errors.append(float(task_loss(theta[None])[0]))
    return trace


# --- MGS for a neural network (the official update, Welleck & Cho 2021, Alg. 1) -------------------------------

@dataclass
class MGSStep:
    task_loss: float  # C(θ) before the step
    candidate_losses: torch.Tensor  # C(θ + Δ_k)
    weights: torch.Tensor  # normalised importance weights
    deltas: list[list[torch.Tensor]]  # Δ_k, one tensor per parameter
    direction: list[torch.Tensor]  # g = −∇L_MLE after clipping


def mgs_step(model: torch.nn.Module, mle_loss, task_loss, optimiser: torch.optim.Optimizer, candidates: int = 4,
             beta: float = 100.0, noise: float = 1.0, clip: float = 1.0,
             generator: torch.Generator | None = None) -> MGSStep:
    """One MLE-guided search step as in the official code:

    1. $g=-\\nabla L_\\mathrm{MLE}$, clipped to norm ``clip``;
    2. candidates $\\Delta_k=g+n_k$ (even $k$) or $n_k$ (odd $k$), $n_k=\\text{noise}\\cdot\\mathcal N(0,I)\\cdot
       \\mathrm{mean}|g|$ per parameter tensor;
    3. $\\log\\tilde w_k=\\mathrm{log\\,softmax}_k[\\beta(C(\\theta)-C(\\theta+\\Delta_k))-\\log q_k]$ with
       ``mgs_log_proposal`` ($\\beta=1/\\alpha$ in Su's notation);
    4. ``param.grad`` $=-\\sum_k\\tilde w_k\\Delta_k$, clipped to ``clip``, and one ``optimiser`` step.

    ``mle_loss(model)`` returns a differentiable loss; ``task_loss(model)`` a float (evaluated under no_grad)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        base = float(task_loss(model))
    model.zero_grad(set_to_none=True)
    mle_loss(model).backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    direction = [-p.grad.detach().clone() for p in params]
    deltas, losses = [], []
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        for k in range(candidates):
            delta = []
            for g in direction:
                n = noise * torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype) * g.abs().mean()
                delta.append(g + n if k % 2 == 0 else n)
            for p, s, d in zip(params, saved, delta):
                p.copy_(s + d)
            losses.append(float(task_loss(model)))
            deltas.append(delta)
        for p, s in zip(params, saved):
            p.copy_(s)
        flat_direction = torch.cat([g.flatten() for g in direction]).double()
        flat = torch.stack([torch.cat([d.flatten() for d in delta]).double() for delta in deltas])
        log_q = mgs_log_proposal(flat, flat_direction)
        candidate_losses = torch.tensor(losses, dtype=torch.float64, device=log_q.device)
        weights = (beta * (base - candidate_losses) - log_q).softmax(0)
        for i, p in enumerate(params):
            p.grad = -sum(float(w) * delta[i] for w, delta in zip(weights, deltas))
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimiser.step()
    return MGSStep(base, candidate_losses.cpu(), weights.cpu(), deltas, direction)
