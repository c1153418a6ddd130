"""Why residuals? DeepNet's update-size analysis (kexue.fm/archives/8994, /8978), chapter ``deepnet-residual``.

One SGD step changes the loss by ΔL ≈ −η‖∇_θ L‖². With N sublayers whose gradients are each O(1), ‖∇‖² grows
like N ("increment explosion"), however stable the forward and backward passes are. A residual
x_{l+1} = x_l + ε f(x_l) with ε = 1/√N makes every parameter gradient O(1/√N), so the update stays O(η).
DeepNorm (Wang et al. 2022) does the same inside a Post-LN network:

    x_{l+1} = LN(α x_l + G_l(x_l)),   FFN, value and output projections initialised with gain β,

with the constants of :func:`deepnorm_alpha_beta`. Su's correction (8978): those constants make the update
O(η) for SGD; Adam's first step is η·sign(g), which changes the loss by −η‖g‖₁, so Adam needs
α = (2N)^{1/2}, λ = (2N)^{-1/2} (:func:`su_alpha_lambda`).

:class:`FFNStack` is the test bench of the chapter: L feed-forward sublayers f(h) = relu(h W₁) W₂ of width d in
one of the architectures of :data:`ARCHITECTURES`; :mod:`kitlib.update_size` measures ‖F(x; θ') − F(x; θ)‖ and
‖∇‖² for one SGD or Adam step of it (and of the tiny Transformers of :mod:`kitlib.tiny_transformers`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def deepnorm_alpha_beta(encoder_layers: float, decoder_layers: float) -> dict:
    """DeepNorm's constants (Wang et al. 2022, Table/Fig. 2) for N encoder and M decoder layers.

    - encoder-only (M = 0): α = (2N)^{1/4}, β = (8N)^{-1/4};
    - decoder-only (N = 0): α = (2M)^{1/4}, β = (8M)^{-1/4};
    - encoder-decoder: encoder α = 0.81 (N⁴M)^{1/16}, β = 0.87 (N⁴M)^{-1/16};
      decoder α = (3M)^{1/4}, β = (12M)^{-1/4}.

    Returns ``{"encoder": (α, β) or None, "decoder": (α, β) or None}``; a side with no layers is None.
    A layer is one Transformer block (2 sublayers in an encoder, 3 in a decoder with cross-attention).
    """
    for name, value in (("encoder_layers", encoder_layers), ("decoder_layers", decoder_layers)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or math.isnan(value):
            raise ValueError(f"{name} must be a number ≥ 0, got {value!r}")
    n, m = encoder_layers, decoder_layers
    if n == 0 and m == 0:
        raise ValueError("a model needs encoder_layers > 0 or decoder_layers > 0")
    if m == 0:
        return {"encoder": ((2 * n) ** 0.25, (8 * n) ** -0.25), "decoder": None}
    if n == 0:
        return {"encoder": None, "decoder": ((2 * m) ** 0.25, (8 * m) ** -0.25)}
    scale = (n**4 * m) ** (1 / 16)
    return {"encoder": (0.81 * scale, 0.87 / scale), "decoder": ((3 * m) ** 0.25, (12 * m) ** -0.25)}


def su_alpha_lambda(sublayers: float, optimiser: str) -> tuple[float, float]:
    """Su's per-optimiser constants (8978) for a Post-LN stack of 2N = ``sublayers`` sublayers.

    The gradient of a branch with weights of scale λ behind α is O(λ/α) per matrix, and the first-order change
    of the loss must stay O(η):
    - SGD, ΔL = −η‖g‖²: λ/α = (2N)^{-1/2}; "symmetric" λ = 1/α ⇒ α = (2N)^{1/4}, λ = (2N)^{-1/4};
    - Adam ≈ sign, ΔL = −η‖g‖₁: λ/α = (2N)^{-1}, λ = 1/α ⇒ α = (2N)^{1/2}, λ = (2N)^{-1/2};
    - LAMB, ΔL = −η‖θ‖‖g‖₁ (relative step): λ²/α = (2N)^{-1} with α = 1 ⇒ λ = (2N)^{-1/2}.
    """
    if sublayers <= 0:
        raise ValueError(f"sublayers must be > 0, got {sublayers!r}")
    rows = {
        "sgd": ((sublayers) ** 0.25, (sublayers) ** -0.25),
        "adam": ((sublayers) ** 0.5, (sublayers) ** -0.5),
        "lamb": (1.0, (sublayers) ** -0.5),
    }
    if optimiser not in rows:
        raise ValueError(f"unknown optimiser {optimiser!r}; choose one of {sorted(rows)}")
    return rows[optimiser]


#: DeepNorm's constants read off the paper's table (Wang et al. 2022, Fig. 2) for a few layer counts, to 4
#: decimals: (N, M) → (encoder (α, β) or None, decoder (α, β) or None). Worked out by hand in the reference notes.
PAPER_CONSTANTS = {
    (6, 0): ((1.8612, 0.3799), None),
    (18, 0): ((2.4495, 0.2887), None),
    (100, 0): ((3.7606, 0.1880), None),
    (1000, 0): ((6.6874, 0.1057), None),
    (0, 18): (None, (2.4495, 0.2887)),
    (6, 6): ((1.4179, 0.4970), (2.0598, 0.3433)),
}


def paper_table_error(constants=deepnorm_alpha_beta) -> float:
    """Largest relative error of ``constants(N, M)`` against :data:`PAPER_CONSTANTS` (∞ when a side that the
    table leaves empty is not None). Rounding the table to 4 decimals alone gives up to 5·10⁻⁴."""
    worst = 0.0
    for (n, m), expected in PAPER_CONSTANTS.items():
        got = constants(n, m)
        for side, want in zip(("encoder", "decoder"), expected):
            if (want is None) != (got[side] is None):
                return math.inf
            if want is not None:
                worst = max(worst, *(abs(g / w - 1) for g, w in zip(got[side], want)))
    return worst


def su_table_error(constants=su_alpha_lambda, sublayers=(12, 36, 200, 2000)) -> float:
    """Largest relative error of ``constants(2N, optimiser)`` against Su's rows written as closed forms of
    s = 2N (8978): SGD (s^{1/4}, s^{-1/4}), Adam (s^{1/2}, s^{-1/2}), LAMB (1, s^{-1/2})."""
    rows = {"sgd": lambda s: (s**0.25, s**-0.25), "adam": lambda s: (s**0.5, s**-0.5),
            "lamb": lambda s: (1.0, s**-0.5)}
    return max(abs(g / w - 1) for s in sublayers for name, closed_form in rows.items()
               for g, w in zip(constants(s, name), closed_form(s)))


def encoder_decoder_coefficients(constants=deepnorm_alpha_beta, layers=((6, 6), (18, 18), (100, 100))):
    """The encoder's coefficients (a, b) in α = a (N⁴M)^{1/16}, β = b (N⁴M)^{-1/16}, read off ``constants``:
    the largest deviation over ``layers`` from 27^{-1/16} and 27^{1/16}/√2 (App. C), which the paper rounds to
    0.81 and 0.87. Returns (|a − 27^{-1/16}|, |b − 27^{1/16}/√2|), each ≤ 0.005 when the rounding is right."""
    a_exact, b_exact = 27 ** (-1 / 16), 27 ** (1 / 16) / math.sqrt(2)
    gaps_a, gaps_b = [], []
    for n, m in layers:
        alpha, beta = constants(n, m)["encoder"]
        scale = (n**4 * m) ** (1 / 16)
        gaps_a.append(abs(alpha / scale - a_exact))
        gaps_b.append(abs(beta * scale - b_exact))
    return max(gaps_a), max(gaps_b)


#: architectures of :class:`FFNStack`
ARCHITECTURES = {
    "plain": "h ← h Q_l, Q_l orthogonal (linear; forward and backward exactly norm-preserving)",
    "residual": "h ← h + f(h)/√L (no normalisation)",
    "post_ln": "h ← LN(h + f(h))",
    "pre_ln": "h ← h + f(LN(h)), final LN",
    "deepnorm": "h ← LN(α h + f(h)), W ×β; (α, β) = deepnorm_alpha_beta(L/2, 0)",
    "su_adam": "h ← LN(α h + f(h)), W ×λ; (α, λ) = su_alpha_lambda(L, 'adam')",
    "labml": "h ← LN(h + α f(h)), W ×β: the skip and branch weights of DeepNorm swapped",
}


def layer_norm(h: torch.Tensor) -> torch.Tensor:
    """LN without affine parameters: (h − mean) / sqrt(var + 1e-5) over the last dimension."""
    return F.layer_norm(h, h.shape[-1:])


class FFNStack(nn.Module):
    """L feed-forward sublayers f(h) = relu(h W₁) W₂ (width d, no biases) in one of :data:`ARCHITECTURES`.

    W₁ ~ N(0, 2/d), W₂ ~ N(0, 1/d), so f maps a standard normal h to ‖f(h)‖ ≈ ‖h‖ and its input–output
    Jacobian preserves norms on average; "deepnorm", "su_adam" and "labml" multiply both by their β (λ).
    The L sublayers correspond to N = L/2 Transformer layers of 2 sublayers each.
    """

    def __init__(self, width: int, depth: int, architecture: str, generator: torch.Generator | None = None):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be ≥ 1, got depth={depth}, width={width}")
        self.width, self.depth, self.architecture = width, depth, architecture
        self.alpha, gain = 1.0, 1.0
        if architecture == "deepnorm" or architecture == "labml":
            self.alpha, gain = deepnorm_alpha_beta(depth / 2, 0)["encoder"]
        elif architecture == "su_adam":
            self.alpha, gain = su_alpha_lambda(depth, "adam")
        if architecture == "plain":
            blocks = [torch.linalg.qr(torch.randn(width, width, generator=generator))[0] for _ in range(depth)]
            self.w1 = nn.Parameter(torch.stack(blocks))
            self.w2 = None
        else:
            std1, std2 = gain * math.sqrt(2 / width), gain * math.sqrt(1 / width)
            self.w1 = nn.Parameter(torch.randn(depth, width, width, generator=generator) * std1)
            self.w2 = nn.Parameter(torch.randn(depth, width, width, generator=generator) * std2)

    def branch(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """f_l(h) = relu(h W₁[l]) W₂[l]."""
        return torch.relu(h @ self.w1[layer]) @ self.w2[layer]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        arch, depth, alpha = self.architecture, self.depth, self.alpha
        # unbind once: indexing w1[l] inside the loop would make backward add L full-size (L, d, d) zero
        # gradients, O(L²) work where unbind's backward stacks the L slices once
        w1 = self.w1.unbind(0)
        w2 = self.w2.unbind(0) if self.w2 is not None else None
        for layer in range(depth):
            if arch == "plain":
                h = h @ w1[layer]
                continue
            branch = lambda t: torch.relu(t @ w1[layer]) @ w2[layer]  # noqa: E731
            if arch == "residual":
                h = h + branch(h) / math.sqrt(depth)
            elif arch == "post_ln":
                h = layer_norm(h + branch(h))
            elif arch == "pre_ln":
                h = h + branch(layer_norm(h))
            elif arch == "labml":
                h = layer_norm(h + alpha * branch(h))
            else:  # deepnorm, su_adam
                h = layer_norm(alpha * h + branch(h))
        return layer_norm(h) if arch == "pre_ln" else h


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0])


def residual_jacobian_gain(width: int, depth: int, eps: float, samples: int,
                           generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Squared gain ‖v ∂y/∂x‖² / ‖v‖² of y = h_N, h_{l+1} = h_l + ε f_l(h_l), for ``samples`` pairs (x, v)
    of standard normal vectors (shape (samples,)), with f_l the feed-forward branch of :class:`FFNStack` (fresh
    weights for every sample's network would cost more and change nothing on average; one network serves all
    samples). ``dtype=torch.float64`` for ε = 1, whose gain ≈ 2^N overflows float32 beyond N ≈ 120.

    In high dimension v and ε v ∂f/∂x are nearly orthogonal, so each layer multiplies the squared norm by
    ≈ 1 + ε², and the gain is ≈ (1 + ε²)^N (→ e at ε² = 1/N), not the 1-D bound (1 + ε)^{2N}.
    """
    stack = FFNStack(width, depth, "residual", generator=generator).to(dtype)
    x = torch.randn(samples, width, generator=generator).to(dtype).requires_grad_()  # the same draws in any dtype
    v = torch.randn(samples, width, generator=generator).to(dtype)
    w1, w2 = stack.w1.detach().unbind(0), stack.w2.detach().unbind(0)
    h = x
    for layer in range(depth):
        h = h + eps * (torch.relu(h @ w1[layer]) @ w2[layer])
    (vjp,) = torch.autograd.grad(h, x, grad_outputs=v)
    return vjp.pow(2).sum(-1) / v.pow(2).sum(-1)
