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
one of the architectures of :data:`ARCHITECTURES`; :func:`one_step_update` measures ‖F(x; θ') − F(x; θ)‖ and
‖∇‖² for one SGD or Adam step.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .train import progress_bar


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
        return torch.relu(h @ self.w1[layer]) @ self.w2[layer]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        arch, depth = self.architecture, self.depth
        for layer in range(depth):
            if arch == "plain":
                h = h @ self.w1[layer]
            elif arch == "residual":
                h = h + self.branch(h, layer) / math.sqrt(depth)
            elif arch == "post_ln":
                h = layer_norm(h + self.branch(h, layer))
            elif arch == "pre_ln":
                h = h + self.branch(layer_norm(h), layer)
            elif arch == "labml":
                h = layer_norm(h + self.alpha * self.branch(h, layer))
            else:  # deepnorm, su_adam
                h = layer_norm(self.alpha * h + self.branch(h, layer))
        return layer_norm(h) if arch == "pre_ln" else h


def half_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = ½ · mean over samples of ‖F(x_i) − y_i‖²."""
    return 0.5 * (output - target).pow(2).sum(-1).mean()


def one_step_update(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, optimiser: str,
                    lr: float, *, loss_fn=None, output_fn=None, trainable=None) -> dict:
    """Take one step of ``optimiser`` ("sgd" or "adam") from a copy of ``model``; return

    - ``update``: rms over samples (tokens) of ‖F(x; θ') − F(x; θ)‖ (the paper's model update ‖ΔF‖);
    - ``grad_sq``, ``grad_l1``: ‖∇_θ L‖², ‖∇_θ L‖₁ at θ over the trained parameters;
    - ``loss_change``: L(θ') − L(θ), to compare with −η‖g‖² (SGD) or −η‖g‖₁ (Adam's first step ≈ sign).

    Defaults: F = ``model(inputs)`` and L = ½ mean ‖F − y‖²; ``output_fn(model, inputs)`` and
    ``loss_fn(model, inputs, targets)`` replace them (e.g. a language model's last hidden state and its
    cross-entropy). ``trainable(name)`` selects the parameters that take the step (default: all).
    Adam's first step with bias correction is η·g/(|g| + ε), i.e. η·sign(g) up to ε; torch's Adam is used.
    ``model`` itself is not changed.
    """
    output_fn = output_fn or (lambda m, x: m(x))
    loss_fn = loss_fn or (lambda m, x, y: half_squared_error(m(x), y))
    stepped = copy.deepcopy(model)
    params = [p for name, p in stepped.named_parameters()
              if p.requires_grad and (trainable is None or trainable(name))]
    if optimiser == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    elif optimiser == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        raise ValueError(f"unknown optimiser {optimiser!r}; choose 'sgd' or 'adam'")
    with torch.no_grad():
        output = output_fn(stepped, inputs)
    loss = loss_fn(stepped, inputs, targets)
    opt.zero_grad()
    loss.backward()
    params = [p for p in params if p.grad is not None]  # parameters the loss does not reach
    grad_sq = sum(float(p.grad.pow(2).sum()) for p in params)
    grad_l1 = sum(float(p.grad.abs().sum()) for p in params)
    opt.step()
    with torch.no_grad():
        new_output = output_fn(stepped, inputs)
        new_loss = loss_fn(stepped, inputs, targets)
        update = (new_output - output).pow(2).sum(-1).mean().sqrt()
    if not torch.isfinite(update):
        raise FloatingPointError(
            f"the one-step update of {getattr(model, 'architecture', 'the model')} is not finite: "
            "lower the learning rate or the depth"
        )
    return {"update": float(update), "grad_sq": grad_sq, "grad_l1": grad_l1,
            "loss_change": float(new_loss - loss.detach())}


def update_size_sweep(architectures, depths, seeds, optimiser: str, lr: float, *, width: int = 64,
                      batch: int = 64, device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """:func:`one_step_update` of an :class:`FFNStack` for every architecture, depth and seed.

    Seed s draws the weights, a batch x ~ N(0, I) and targets y ~ N(0, I) (the same for every architecture).
    Returns ``{architecture: {"update": array (depths, seeds), "grad_sq": array (depths, seeds)}}``."""
    cells = [(a, i, j) for a in architectures for i in range(len(depths)) for j in range(len(seeds))]
    out = {a: {"update": np.zeros((len(depths), len(seeds))), "grad_sq": np.zeros((len(depths), len(seeds)))}
           for a in architectures}
    for arch, i, j in progress_bar(cells, f"one {optimiser} step", progress):
        gen = torch.Generator().manual_seed(int(seeds[j]))
        stack = FFNStack(width, depths[i], arch, generator=gen).to(device)
        x = torch.randn(batch, width, generator=gen).to(device)
        y = torch.randn(batch, width, generator=gen).to(device)
        result = one_step_update(stack, x, y, optimiser, lr)
        out[arch]["update"][i, j], out[arch]["grad_sq"][i, j] = result["update"], result["grad_sq"]
    return out


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0])


def residual_jacobian_gain(width: int, depth: int, eps: float, samples: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Squared gain ‖v ∂y/∂x‖² / ‖v‖² of y = h_N, h_{l+1} = h_l + ε f_l(h_l), for ``samples`` pairs (x, v)
    of standard normal vectors, with f_l the feed-forward branch of :class:`FFNStack` (fresh weights for
    every sample's network would cost more and change nothing on average; one network serves all samples).

    In high dimension v and ε v ∂f/∂x are nearly orthogonal, so each layer multiplies the squared norm by
    ≈ 1 + ε², and the gain is ≈ (1 + ε²)^N (→ e at ε² = 1/N), not the 1-D bound (1 + ε)^{2N}.
    """
    stack = FFNStack(width, depth, "residual", generator=generator)
    x = torch.randn(samples, width, generator=generator, requires_grad=True)
    v = torch.randn(samples, width, generator=generator)
    h = x
    for layer in range(depth):
        h = h + eps * stack.branch(h, layer)
    (vjp,) = torch.autograd.grad(h, x, grad_outputs=v)
    return vjp.pow(2).sum(-1) / v.pow(2).sum(-1)
