"""The word-vector dimension formula n > 8.33 log N (kexue.fm/archives/7695, /8711), chapter ``dimension-formula``.

Skip-gram as one softmax over the N² pairs of two tables of vectors, u_i, v_j uniform on the sphere of radius
√n, has entropy H = log Z − Σ p_ij s_ij with s_ij = ⟨u_i, v_j⟩. Replacing the double sum by N² times an
expectation (the "sampling approximation") gives

    H ≈ 2 log N + h_n,   h_n = log E[e^s] − E[s e^s] / E[e^s],   s = n cos θ,   p_n(θ) ∝ sin^{n−2} θ,

and h_n/n → log sin θ* = −½ log φ = −0.2406 (Laplace's method at cos θ* = sin² θ*, i.e. cos θ* = 0.618),
so the approximation turns negative — impossible for an entropy — once n > (4/log φ) log N ≈ 8.31 log N.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import beta

GOLDEN_RATIO = (1 + math.sqrt(5)) / 2
#: the limit of h_n / n:  −½ log φ
H_N_SLOPE = -0.5 * math.log(GOLDEN_RATIO)
#: the exact constant of the formula, 4 / log φ = 8.3123 (the post writes 2 / 0.24 = 8.33)
EXACT_CONSTANT = 4 / math.log(GOLDEN_RATIO)


def _angle_grid(points: int) -> np.ndarray:
    return np.linspace(0.0, math.pi, points)[1:-1]   # the density vanishes at both ends for n > 2


def h_n(n: float, points: int = 20_001) -> float:
    """h_n = log E[e^s] − E[s e^s]/E[e^s] with s = n cos θ, θ ~ p_n(θ) ∝ sin^{n−2} θ on (0, π).

    Computed by integration on a uniform θ-grid in log space (stable for n up to 10⁴; trapezoid
    weights are uniform inside, and the integrand vanishes at the ends). Real n ≥ 2 is accepted."""
    if n < 2:
        raise ValueError(f"h_n needs n ≥ 2, got {n}")
    theta = _angle_grid(points)
    log_density = (n - 2) * np.log(np.sin(theta))
    s = n * np.cos(theta)
    log_tilted = log_density + s
    log_mean_exp = logsumexp(log_tilted) - logsumexp(log_density)      # log E[e^s]
    tilted = np.exp(log_tilted - logsumexp(log_tilted))                # the e^s-tilted angle law
    return float(log_mean_exp - (tilted * s).sum())


def tilted_mean_cos(n: float, points: int = 20_001) -> float:
    """E[cos θ e^{n cos θ}] / E[e^{n cos θ}]: where the tilted angle law concentrates (→ 0.618)."""
    theta = _angle_grid(points)
    log_tilted = (n - 2) * np.log(np.sin(theta)) + n * np.cos(theta)
    return float((np.exp(log_tilted - logsumexp(log_tilted)) * np.cos(theta)).sum())


def cos_tail_rate(n: float, threshold: float = (math.sqrt(5) - 1) / 2) -> float:
    """−(1/n) log P(cos θ > c) for two random directions in R^n, using (1 + cos θ)/2 ~ Beta((n−1)/2, (n−1)/2).
    Its limit is −½ log(1 − c²), which is 0.2406 at c = 0.618."""
    a = (n - 1) / 2
    return float(-beta.logsf((1 + threshold) / 2, a, a) / n)


def entropy_approximation(N: float, n: float) -> float:
    """The sampling approximation of the pair softmax's entropy: 2 log N + h_n (nats)."""
    return 2 * math.log(N) + h_n(n)


def critical_dim(N: float) -> float:
    """The real root n* of 2 log N + h_n = 0: the post's threshold, ≈ 8.31 log N for large N."""
    if N < 2:
        raise ValueError("critical_dim needs N ≥ 2")
    return float(brentq(lambda n: entropy_approximation(N, n), 2.0, 20 * math.log(N) + 50, xtol=1e-6))


def sphere_vectors(count: int, n: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``count`` vectors uniform on the sphere of radius √n in R^n (so each component is O(1))."""
    x = torch.randn(count, n, generator=generator, dtype=dtype, device="cpu").to(device)
    return x * (math.sqrt(n) / x.norm(dim=1, keepdim=True))


def pair_softmax_entropy(u: torch.Tensor, v: torch.Tensor, block: int = 2048) -> float:
    """Exact entropy (nats) of p_ij ∝ exp⟨u_i, v_j⟩ over all N_u × N_v pairs, computed in row blocks:
    H = log Z − E_p[s], with log Z = logsumexp over every pair."""
    log_z_blocks, s_sum_blocks, max_blocks = [], [], []
    for start in range(0, len(u), block):
        s = u[start:start + block] @ v.T
        m = s.max()
        w = torch.exp(s - m)
        log_z_blocks.append(torch.log(w.sum()) + m)
        s_sum_blocks.append((w * s).sum())
        max_blocks.append(m)
    log_z_blocks = torch.stack(log_z_blocks)
    log_z = torch.logsumexp(log_z_blocks, dim=0)
    # Σ p_ij s_ij = Σ_blocks (Σ w s) e^{m_b} / Z
    scale = torch.exp(torch.stack(max_blocks) - log_z)
    mean_s = (torch.stack(s_sum_blocks) * scale).sum()
    return float(log_z - mean_s)


def jl_min_dim(points: torch.Tensor, eps: float, generator: torch.Generator | None = None,
               candidates: list[int] | None = None) -> int:
    """Smallest k (from ``candidates``, increasing) for which one Gaussian projection A ~ N(0, 1/k) keeps every
    pairwise squared distance within a factor [1 − ε, 1 + ε]; the Johnson–Lindenstrauss lemma bounds it by
    O(log N / ε²), e.g. 24 log N / ε² in the post's form. Returns −1 if no candidate works."""
    points = points.double()
    d2 = torch.cdist(points, points).pow(2)
    mask = ~torch.eye(len(points), dtype=torch.bool)
    for k in candidates or [2**i for i in range(1, 14)]:
        a = torch.randn(points.shape[1], k, generator=generator, dtype=torch.float64) / math.sqrt(k)
        y = points @ a
        ratio = torch.cdist(y, y).pow(2)[mask] / d2[mask]
        if ratio.min() >= 1 - eps and ratio.max() <= 1 + eps:
            return k
    return -1


def pair_cross_entropy(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−Σ_ij P_ij log p_ij for the joint pair softmax p_ij = exp⟨u_i, v_j⟩ / Σ_kl exp⟨u_k, v_l⟩ and a target
    distribution P over the N × N pairs (nats)."""
    s = u @ v.T
    return torch.logsumexp(s.flatten(), dim=0) - (target * s).sum()


def pair_cross_entropy_and_grad(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor):
    """:func:`pair_cross_entropy` and its gradient in one exp pass: with p = softmax over all pairs of s = u vᵀ,
    ∂L/∂s = p − P, so ∂L/∂u = (p − P) v and ∂L/∂v = (p − P)ᵀ u. Returns (loss, grad_u, grad_v)."""
    s = u @ v.T
    top = s.max()
    e = torch.exp(s - top)
    z = e.sum()
    loss = torch.log(z) + top - (target * s).sum()
    g = e.div_(z).sub_(target)
    return loss, g @ v, g.T @ u


def fit_pair_softmax(target: torch.Tensor, dim: int, steps: int, lr: float = 0.05,
                     generator: torch.Generator | None = None, init_scale: float = 0.1,
                     held_out: torch.Tensor | None = None, eval_every: int = 50):
    """Fit the skip-gram of the minimum-entropy post — one softmax over all N² pairs, two tables u, v ∈ R^{N×dim}
    — to a target pair distribution by full-batch Adam on :func:`pair_cross_entropy` (gradient in closed form,
    :func:`pair_cross_entropy_and_grad`).

    Returns (u, v, history) with history = {"step": [...], "train": [...], "held_out": [...]}."""
    n_words = target.shape[0]
    device, dtype = target.device, target.dtype
    u = (init_scale * torch.randn(n_words, dim, generator=generator, dtype=dtype)).to(device).requires_grad_(True)
    v = (init_scale * torch.randn(n_words, dim, generator=generator, dtype=dtype)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([u, v], lr=lr)
    history: dict[str, list[float]] = {"step": [], "train": [], "held_out": []}
    for step in range(steps + 1):
        with torch.no_grad():
            loss, grad_u, grad_v = pair_cross_entropy_and_grad(u, v, target)
            if step % eval_every == 0 or step == steps:
                history["step"].append(step)
                history["train"].append(loss.item())
                if held_out is not None:
                    history["held_out"].append(pair_cross_entropy(u, v, held_out).item())
        if step == steps:
            break
        u.grad, v.grad = grad_u, grad_v
        opt.step()
    return u.detach(), v.detach(), history


# -- the brute-force check of the sampling approximation (chapter §3) ------------------------------------------
def entropy_dimension_grid(N: int) -> list[int]:
    """The dimensions at which §3 of ``dimension-formula`` computes exact entropies for N words: a few small n,
    multiples of log N (where the sampling approximation should hold), and n*, 1.5 n*, 2 n* (where it cannot)."""
    log_n, n_star = math.log(N), critical_dim(N)
    grid = {4, 8, 12, 16, int(2 * log_n), int(3 * log_n), int(4.5 * log_n)}
    return sorted(grid | {int(round(n_star)), int(1.5 * n_star) + 1, int(2 * n_star)})


def exact_entropy_draws(N: int, n: int, draws: int, generator: torch.Generator | None = None,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64,
                        block: int = 2048) -> np.ndarray:
    """``draws`` independent values of the exact entropy of p_ij ∝ exp⟨u_i, v_j⟩ over N × N pairs, the 2N vectors
    drawn uniform on the sphere of radius √n each time (:func:`pair_softmax_entropy`, row blocks of ``block``).
    float32 is enough for the chapter's 1 % and 0.1-nat questions and twice as fast. Shape (draws,)."""
    return np.array([pair_softmax_entropy(sphere_vectors(N, n, generator, device, dtype),
                                          sphere_vectors(N, n, generator, device, dtype), block=block)
                     for _ in range(draws)])


# -- baselines and scores for the word vectors on real text (chapter §4) ---------------------------------------
def unigram_pair_cross_entropy(train_counts: torch.Tensor, target: torch.Tensor, smoothing: float = 0.5) -> float:
    """−Σ_ij P_ij log(q_i q_j): the cross-entropy of a target pair distribution P (N × N) under the unigram
    (independence) model fitted to training co-occurrence counts C (N × N), q_i ∝ Σ_j C_ij + ``smoothing``.
    It knows word frequencies and nothing about which words occur together: the baseline the pair softmax
    of ``dimension-formula`` has to beat (nats)."""
    q = train_counts.double().sum(1) + smoothing
    log_q = torch.log(q / q.sum())
    target = target.double()
    return float(-(target.sum(1) * log_q).sum() - (target.sum(0) * log_q).sum())


def similarity_spearman(vectors: torch.Tensor, pairs: list[tuple[int, int, float]]) -> float:
    """Spearman ρ between the cosines of word vectors (N × n) for (i, j, human score) pairs and the scores."""
    from scipy.stats import spearmanr

    unit = torch.nn.functional.normalize(vectors.double().cpu(), dim=1)
    i = torch.tensor([a for a, _, _ in pairs])
    j = torch.tensor([b for _, b, _ in pairs])
    cosines = (unit[i] * unit[j]).sum(1).numpy()
    return float(spearmanr(cosines, [s for *_, s in pairs]).statistic)


def saturation_dim(dims, losses, tol: float = 0.01):
    """The smallest dimension whose (held-out) loss is within ``tol`` of the lowest over ``dims``."""
    losses = np.asarray(losses, dtype=float)
    return min(n for n, loss in zip(dims, losses) if loss <= losses.min() + tol)
