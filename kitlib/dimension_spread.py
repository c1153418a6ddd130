"""Where the sampling approximation of the dimension formula breaks down at finite N: the draw-to-draw spread of
the exact pair-softmax entropy (chapter ``dimension-formula``, §3).

For N words with vectors u_i, v_j uniform on the sphere of radius √n, the exact entropy of p_ij ∝ e^{s_ij},
s_ij = ⟨u_i, v_j⟩, is H = log Z − S/Z with Z = Σ_ij e^{s_ij} and S = Σ_ij s_ij e^{s_ij}. Terms that share a
vector are uncorrelated (E_v e^{⟨u, v⟩} does not depend on u), so to first order in the fluctuations of Z and S
(the delta method; the same "annealed" averaging as the formula itself) the variance of H over draws is

    Var H ≈ (1/N²) · ( E[e^{2s} (1 + m − s)²] / E[e^s]² − 1 ),   m = E[s e^s] / E[e^s],

with s = n cos θ, p_n(θ) ∝ sin^{n−2} θ (one random pair). Its growth rate in n tends to f(2) − 2 f(1) = 0.337,
f(β) = max_c [β c + ½ log(1 − c²)], so the n at which the spread reaches a fixed size τ grows like
(2 / 0.337) log N = 5.94 log N for very large N; over N = 100 … 3000 the polynomial factors bring the slope of
that n against log N nearer 4.3 (:func:`spread_onset_dim`). The formula's own threshold n* ≈ 8.31 log N is
further out.

:func:`spread_breakdown_dim` reads the same point off Monte-Carlo draws: it fits log(spread) linearly in n over
a few dimensions around the crossing and solves for spread = τ.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp


def log_entropy_variance_factor(n: float, points: int = 20_001) -> float:
    """log( E[e^{2s}(1 + m − s)²] / E[e^s]² − 1 ) for one random pair, s = n cos θ, θ ~ sin^{n−2} θ on (0, π):
    N² times the delta-method variance of the exact entropy (module docstring). Integrated on a uniform θ grid
    in log space, like :func:`kitlib.dimension.h_n`."""
    if n < 2:
        raise ValueError(f"needs n ≥ 2, got {n}")
    theta = np.linspace(0.0, math.pi, points)[1:-1]
    log_density = (n - 2) * np.log(np.sin(theta))
    s = n * np.cos(theta)
    log_norm = logsumexp(log_density)
    log_e1 = logsumexp(log_density + s) - log_norm                     # log E[e^s]
    m = float(np.exp(log_density + s - log_norm - log_e1) @ s)        # the tilted mean score
    log_g2 = 2 * np.log(np.abs(1 + m - s) + 1e-300)
    log_ratio = logsumexp(log_density + 2 * s + log_g2) - log_norm - 2 * log_e1
    return float(math.log(math.expm1(log_ratio)))


def entropy_spread_theory(N: float, n: float) -> float:
    """Delta-method standard deviation (nats) of the exact N × N pair-softmax entropy over draws of the vectors."""
    return math.exp(0.5 * log_entropy_variance_factor(n)) / N


def spread_onset_dim(N: float, tau: float = 0.1) -> float:
    """The (real) n at which :func:`entropy_spread_theory` reaches ``tau`` nats."""
    return float(brentq(lambda n: 0.5 * log_entropy_variance_factor(n) - math.log(N * tau), 2.0,
                        20 * math.log(N) + 50, xtol=1e-6))


def spread_breakdown_dim(dims, spreads, tau: float = 0.1) -> float:
    """n at which the draw-to-draw spread reaches ``tau``: least-squares fit log(spread) = a + b n over the given
    dimensions (shape (k,), k ≥ 2), solved for a + b n = log τ. NaN if the fitted spread does not grow."""
    dims, spreads = np.asarray(dims, dtype=float), np.asarray(spreads, dtype=float)
    b, a = np.polyfit(dims, np.log(spreads), 1)
    return float((math.log(tau) - a) / b) if b > 0 else math.nan


def breakdown_grid(N: float, tau: float = 0.1, half_width: int = 4, step: int = 2) -> list[int]:
    """Integer dimensions around :func:`spread_onset_dim` (± ``half_width`` in steps of ``step``) at which the
    chapter draws the exact entropy to locate the breakdown."""
    centre = int(round(spread_onset_dim(N, tau)))
    return list(range(max(2, centre - half_width), centre + half_width + 1, step))
