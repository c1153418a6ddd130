"""Random-feature attention (Performer, FAVOR+) and linear attention; chapter ``performer``.

The softmax kernel $\\mathrm{SM}(x,y)=e^{x\\cdot y}$ is an expectation over Gaussian $\\omega\\sim\\mathcal N(0,I_d)$
(Choromanski et al. 2021, Lemma 1):

$$e^{x\\cdot y}=\\mathbb E_\\omega\\big[e^{\\omega\\cdot x-\\|x\\|^2/2}\\,e^{\\omega\\cdot y-\\|y\\|^2/2}\\big]
=e^{(\\|x\\|^2+\\|y\\|^2)/2}\\,\\mathbb E_\\omega[\\cos\\omega\\cdot(x-y)] ,$$

so $m$ draws $\\omega_1..\\omega_m$ give features $\\phi(x)$ with $\\phi(x)\\cdot\\phi(y)\\approx e^{x\\cdot y}$
(:func:`favor_features`). Attention $D^{-1}\\exp(QK^\\top)V$ then becomes
$D^{-1}\\phi(Q)(\\phi(K)^\\top V)$, linear in the sequence length (:func:`linear_attention`); with
$\\phi(x)=\\mathrm{elu}(x)+1$ instead it is the linear attention of Katharopoulos et al. (2020).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from scipy.optimize import brentq
from scipy.stats import chi
from torch.nn import functional as F

FEATURE_KINDS = ("positive", "trig")


def favor_features(x: torch.Tensor, omega: torch.Tensor, kind: str = "positive") -> torch.Tensor:
    """Random features whose dot product is an unbiased estimate of $e^{x\\cdot y}$.

    - ``positive``: $\\phi(x)_i=e^{\\omega_i\\cdot x-\\|x\\|^2/2}/\\sqrt m$, shape (..., m); every entry > 0.
    - ``trig``: $\\phi(x)=\\frac{e^{\\|x\\|^2/2}}{\\sqrt m}\\big(\\cos\\omega_1\\cdot x,..,\\cos\\omega_m\\cdot x,
      \\sin\\omega_1\\cdot x,..,\\sin\\omega_m\\cdot x\\big)$, shape (..., 2m): random Fourier features of the
      Gaussian kernel $e^{-\\|x-y\\|^2/2}$ rescaled by $e^{(\\|x\\|^2+\\|y\\|^2)/2}$.

    With $\\omega_i\\sim\\mathcal N(0,I)$, $\\mathbb E[\\phi(x)\\cdot\\phi(y)]=e^{x\\cdot y}$ for both kinds.
    ``x`` is (..., d); ``omega`` is (m, d), or (draws, m, d) with ``x`` of shape (points, d) — then the
    result is (draws, points, m) (one independent feature map per draw, used for Monte Carlo).
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; choose one of {FEATURE_KINDS}")
    m = omega.shape[-2]
    projection = x @ omega.transpose(-1, -2)                       # ω_i · x
    half_norm = 0.5 * (x * x).sum(-1, keepdim=True)                # ‖x‖²/2
    if kind == "positive":
        return torch.exp(projection - half_norm) / math.sqrt(m)
    return torch.exp(half_norm) / math.sqrt(m) * torch.cat([torch.cos(projection), torch.sin(projection)], -1)


def softmax_kernel_mse(x: torch.Tensor, y: torch.Tensor, m: int, kind: str = "positive") -> torch.Tensor:
    """Closed-form mean squared error of $\\phi(x)\\cdot\\phi(y)$ with m i.i.d. features (Choromanski et al.
    2021, Lemma 2), with $\\mathrm{SM}=e^{x\\cdot y}$:

    $$\\mathrm{MSE}_{+}=\\tfrac1m e^{\\|x+y\\|^2}\\mathrm{SM}^2\\big(1-e^{-\\|x+y\\|^2}\\big),\\qquad
    \\mathrm{MSE}_{\\mathrm{trig}}=\\tfrac1{2m}e^{\\|x+y\\|^2}\\mathrm{SM}^{-2}\\big(1-e^{-\\|x-y\\|^2}\\big)^2 .$$

    ``x``, ``y``: (..., d); returns (...)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; choose one of {FEATURE_KINDS}")
    plus = ((x + y) ** 2).sum(-1)
    dot = (x * y).sum(-1)
    if kind == "positive":
        return torch.exp(plus + 2 * dot) * (-torch.expm1(-plus)) / m
    minus = ((x - y) ** 2).sum(-1)
    return torch.exp(plus - 2 * dot) * torch.expm1(-minus) ** 2 / (2 * m)


def kernel_mse_crossover(norm: float) -> float:
    """The cosine c at which positive and trigonometric features have the same MSE for ‖x‖ = ‖y‖ = ``norm``.

    Dividing Lemma 2 by SM², the relative MSEs are $(e^{\\|x+y\\|^2}-1)/m$ and $2\\sinh^2(\\|x-y\\|^2/2)/m$ with
    $\\|x\\pm y\\|^2=2r^2(1\\pm c)$; positive features are the better ones for c below the root."""
    r2 = norm**2
    gap = lambda c: math.expm1(2 * r2 * (1 + c)) - 2 * math.sinh(r2 * (1 - c)) ** 2  # noqa: E731
    return brentq(gap, -1.0, 1.0, xtol=1e-12)


def _orthonormal_rows(blocks: int, d: int, generator, dtype, device) -> torch.Tensor:
    """(blocks, d, d): each block a Haar-random orthogonal matrix (QR of a Gaussian, signs fixed by diag R)."""
    gaussian = torch.randn(blocks, d, d, generator=generator, dtype=dtype, device=device)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)).transpose(-1, -2)


def _orthogonal_directions(m: int, d: int, draws: int, generator, dtype, device) -> torch.Tensor:
    """(draws, m, d) unit rows, orthogonal within each block of d rows, blocks independent."""
    blocks = -(-m // d)
    rows = _orthonormal_rows(draws * blocks, d, generator, dtype, device)
    return rows.reshape(draws, blocks * d, d)[:, :m]


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None, *, draws: int | None = None,
                        dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Orthogonal random features (Yu et al. 2016; FAVOR+'s "O"): (m, d) rows whose directions are orthonormal
    within each block of d rows (the last block truncated when d ∤ m) and whose norms are those of independent
    $\\mathcal N(0,I_d)$ vectors ($\\chi_d$), so each row alone is still $\\mathcal N(0,I_d)$ and the estimate
    stays unbiased. ``draws`` returns (draws, m, d) independent matrices. Used by chapter ``performer``."""
    count = 1 if draws is None else draws
    directions = _orthogonal_directions(m, d, count, generator, dtype, device)
    norms = torch.randn(count, m, d, generator=generator, dtype=dtype, device=device).norm(dim=-1)
    omega = directions * norms.unsqueeze(-1)
    return omega[0] if draws is None else omega


def chi_quantile_radii(m: int, d: int) -> torch.Tensor:
    """Su's radii (post 7921): $R_i$ with $P_d(\\|\\omega\\|\\le R_i)=i/(m+1)$, $i=1..m$, the $\\chi_d$
    quantiles (float64, ascending)."""
    return torch.as_tensor(chi.ppf(torch.arange(1, m + 1, dtype=torch.float64).numpy() / (m + 1), d))


def orthogonal_quantile(m: int, d: int, generator: torch.Generator | None = None, *, draws: int | None = None,
                        dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """As :func:`orthogonal_gaussian`, but the norms are the fixed quantiles of :func:`chi_quantile_radii`,
    assigned to the rows in a random order (a quasi-Monte-Carlo radius: no longer exactly unbiased)."""
    count = 1 if draws is None else draws
    directions = _orthogonal_directions(m, d, count, generator, dtype, device)
    radii = chi_quantile_radii(m, d).to(dtype=dtype, device=device)
    order = torch.rand(count, m, generator=generator, dtype=dtype, device=device).argsort(dim=-1)
    omega = directions * radii[order].unsqueeze(-1)
    return omega[0] if draws is None else omega


def iid_gaussian(m: int, d: int, generator: torch.Generator | None = None, *, draws: int | None = None,
                 dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """(m, d) or (draws, m, d) i.i.d. $\\mathcal N(0,1)$ entries: the plain random features."""
    shape = (m, d) if draws is None else (draws, m, d)
    return torch.randn(*shape, generator=generator, dtype=dtype, device=device)


SAMPLERS: dict[str, Callable] = {"iid": iid_gaussian, "orthogonal": orthogonal_gaussian,
                                 "quantile": orthogonal_quantile}


def kernel_estimates(x: torch.Tensor, y: torch.Tensor, m: int, draws: int, *, kinds=("positive", "trig"),
                     sampler: str = "iid", generator: torch.Generator | None = None,
                     chunk: int = 1000) -> dict[str, torch.Tensor]:
    """Monte Carlo estimates $\\phi(x_p)\\cdot\\phi(y_p)$ of $e^{x_p\\cdot y_p}$: ``{kind: (draws, points)}``, one
    fresh feature map of m rows (``SAMPLERS[sampler]``) per draw, shared by all points and kinds.
    ``x``, ``y``: (..., d) → estimates (draws, ...)."""
    points, d = x.shape[:-1], x.shape[-1]
    x, y = x.reshape(-1, d), y.reshape(-1, d)
    out: dict[str, list] = {kind: [] for kind in kinds}
    for start in range(0, draws, chunk):
        omega = SAMPLERS[sampler](m, d, generator, draws=min(chunk, draws - start), dtype=x.dtype, device=x.device)
        for kind in kinds:
            out[kind].append((favor_features(x, omega, kind) * favor_features(y, omega, kind)).sum(-1))
    return {kind: torch.cat(parts).view(draws, *points) for kind, parts in out.items()}


def pairs_with_cosine(d: int, cosines, pairs: int = 1, norm: float = 1.0, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), each (len(cosines), pairs, d): for every cosine c, ``pairs`` random orientations of a pair with
    ‖x‖ = ‖y‖ = ``norm`` and cos(x, y) = c (so e^{x·y} = e^{norm² c} for all of them)."""
    c = torch.as_tensor(cosines, dtype=dtype, device=device)[:, None, None]
    frames = _orthonormal_rows(len(c) * pairs, d, generator, dtype, device).view(len(c), pairs, d, d)
    x = norm * frames[:, :, 0]
    y = norm * (c * frames[:, :, 0] + torch.sqrt(1 - c**2) * frames[:, :, 1])
    return x, y


# -- attention ------------------------------------------------------------------------------------------------
def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Exact $\\mathrm{softmax}(QK^\\top/\\sqrt d)V$ (masked when ``causal``): (..., n, d) → (..., n, d_v)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     chunk: int | None = 128, eps: float = 1e-12) -> torch.Tensor:
    """$D^{-1}\\phi(Q)\\,(\\phi(K)^\\top V)$ with $D=\\mathrm{diag}(\\phi(Q)\\phi(K)^\\top\\mathbf 1)$, never forming
    the n×n matrix: O(n m d_v) time and memory. Shapes (..., n, m), (..., n, m), (..., n, d_v).

    ``causal``: row i uses keys j ≤ i only. The sequence is cut into blocks of ``chunk`` rows; within a block
    the masked block $\\mathrm{tril}(\\phi(Q_b)\\phi(K_b)^\\top)$ is used, across blocks the running state
    $S=\\sum_{j<b}\\phi(k_j)v_j^\\top$ (m × d_v) and $z=\\sum_{j<b}\\phi(k_j)$ — the RNN form of Katharopoulos et
    al., O(n·chunk·m + n·m·d_v). ``chunk=None`` is one block: the masked n×n matrix, fastest for short windows."""
    if not causal:
        numerator = phi_q @ (phi_k.transpose(-1, -2) @ v)
        denominator = phi_q @ phi_k.sum(-2).unsqueeze(-1)
        return numerator / (denominator + eps)
    n = phi_q.shape[-2]
    chunk = n if chunk is None else chunk
    state = phi_k.new_zeros(*phi_k.shape[:-2], phi_k.shape[-1], v.shape[-1])
    normaliser = phi_k.new_zeros(*phi_k.shape[:-2], phi_k.shape[-1], 1)
    outputs = []
    for start in range(0, n, chunk):
        q_b, k_b, v_b = (t[..., start:start + chunk, :] for t in (phi_q, phi_k, v))
        scores = torch.tril(q_b @ k_b.transpose(-1, -2))
        numerator = q_b @ state + scores @ v_b
        denominator = q_b @ normaliser + scores.sum(-1, keepdim=True)
        outputs.append(numerator / (denominator + eps))
        state = state + k_b.transpose(-1, -2) @ v_b
        normaliser = normaliser + k_b.sum(-2).unsqueeze(-1)
    return torch.cat(outputs, dim=-2)


def attention_matrix(scores: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Row-normalised weights from non-negative scores (n, n): A = D⁻¹S, S masked to j ≤ i when ``causal``."""
    if causal:
        scores = torch.tril(scores)
    return scores / scores.sum(-1, keepdim=True)


def favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, omega: torch.Tensor,
                    causal: bool = False, chunk: int | None = 128) -> torch.Tensor:
    """FAVOR+ estimate of :func:`softmax_attention`: positive features of $q/d^{1/4}$ and $k/d^{1/4}$.
    q, k, v: (..., n, d); omega: (m, d), or (heads, m, d) against q of shape (batch, heads, n, d).

    For floating-point range each query row is divided by $e^{\\max_i\\omega_i\\cdot q}$ and all keys by one
    common $e^{\\max\\omega_i\\cdot k}$: constant factors of a row, or of every key, cancel in $D^{-1}$."""
    scale = q.shape[-1] ** -0.25
    q_proj, k_proj = (scale * q) @ omega.transpose(-1, -2), (scale * k) @ omega.transpose(-1, -2)
    q_shift = q_proj.amax(-1, keepdim=True).detach()
    k_shift = k_proj.amax(dim=(-1, -2), keepdim=True).detach()
    phi_q = torch.exp(q_proj - 0.5 * scale**2 * (q * q).sum(-1, keepdim=True) - q_shift)
    phi_k = torch.exp(k_proj - 0.5 * scale**2 * (k * k).sum(-1, keepdim=True) - k_shift)
    return linear_attention(phi_q, phi_k, v, causal, chunk)


def elu_features(x: torch.Tensor) -> torch.Tensor:
    """$\\phi(x)=\\mathrm{elu}(x)+1>0$ (it underflows to 0 below x ≈ −17 in float32), the feature map of
    Katharopoulos et al. (2020)."""
    return F.elu(x) + 1


# -- what linear attention gives up ------------------------------------------------------------------------------
def numerical_rank(matrix: torch.Tensor, rtol: float | None = None) -> int:
    """Number of singular values above ``rtol`` · σ_max (default: n · float eps, as numpy's matrix_rank)."""
    singular = torch.linalg.svdvals(matrix)
    if rtol is None:
        rtol = max(matrix.shape[-2:]) * torch.finfo(matrix.dtype).eps
    return int((singular > rtol * singular.max()).sum())


def row_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of a row-stochastic matrix, $-\\sum_j a_{ij}\\log a_{ij}$ (0 log 0 = 0)."""
    return -torch.special.xlogy(weights, weights).sum(-1)


def attention_costs(lengths: Sequence[int], width: int, m: int, device: torch.device, repeats: int = 3,
                    generator: torch.Generator | None = None) -> dict[str, dict[str, list[float]]]:
    """Seconds (best of ``repeats``) and bytes of one bidirectional attention call, batch 1, one head of
    ``width``, for each n in ``lengths``: ``{"exact" | "favor" | "linear": {"seconds": [...], "bytes": [...]}}``.

    Bytes: on CUDA the measured peak allocation during the call, beyond the inputs; on a CPU the size of the
    intermediate each method must hold, by formula — the n×n scores of textbook attention (fused CPU kernels
    may hold less), n·m features twice plus the m×width state for FAVOR+, and n·width twice plus
    width² for elu+1."""
    omega = orthogonal_gaussian(m, width, generator, dtype=torch.float32).to(device)
    methods = {"exact": lambda q, k, v: softmax_attention(q, k, v),
               "favor": lambda q, k, v: favor_attention(q, k, v, omega),
               "linear": lambda q, k, v: linear_attention(elu_features(q), elu_features(k), v)}
    formula = {"exact": lambda n: n * n, "favor": lambda n: 2 * n * m + m * width,
               "linear": lambda n: 2 * n * width + width * width}
    costs = {name: {"seconds": [], "bytes": []} for name in methods}
    cuda = device.type == "cuda"
    for n in lengths:
        q, k, v = (torch.randn(1, n, width, generator=generator).to(device) for _ in range(3))
        for name, method in methods.items():
            method(q, k, v)                                    # warm-up
            best = math.inf
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                start = time.perf_counter()
                method(q, k, v)
                if cuda:
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - start)
            costs[name]["seconds"].append(best)
            costs[name]["bytes"].append(float(torch.cuda.max_memory_allocated(device) - base) if cuda
                                        else 4.0 * formula[name](n))
    return costs
