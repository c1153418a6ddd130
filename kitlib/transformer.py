"""A tiny decoder-only Transformer language model with the residual/normalisation schemes DeepNet compares.

A block has two sublayers, causal self-attention and a ReLU FFN; with ``norm`` in :data:`NORMS`:

- "post_ln":   x ← LN(x + G(x))                      (the original Transformer)
- "pre_ln":    x ← x + G(LN(x)), final LN
- "deepnorm":  x ← LN(α x + G(x)), FFN, value and output projections initialised with gain β
               (Wang et al. 2022; q and k keep gain 1), (α, β) = ``deepnorm_alpha_beta(0, layers)["decoder"]``
- "su_adam":   as "deepnorm" with Su's Adam constants (α, λ) = ``su_alpha_lambda(2·layers, "adam")``
- "scaled":    x ← x + G(x)/√(2·layers), final LN     (the residual x + f/√L of Su's post, no LN inside)

All linear weights are Xavier-normal (gain 1 unless DeepNorm's β applies), biases zero, as in the DeepNet
paper's pseudocode. Embeddings are learned (token + position) and the output head is a separate Linear.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .deepnorm import deepnorm_alpha_beta, su_alpha_lambda
from .train import progress_bar

NORMS = ("post_ln", "pre_ln", "deepnorm", "su_adam", "scaled")


class Block(nn.Module):
    """One Transformer block: self-attention sublayer then FFN sublayer, combined as ``norm`` says."""

    def __init__(self, width: int, ffn_width: int, heads: int, norm: str, alpha: float, beta: float,
                 branch_scale: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.norm, self.alpha, self.branch_scale = heads, norm, alpha, branch_scale
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(width, ffn_width), nn.Linear(ffn_width, width)
        # the scaled residual has no LayerNorm inside its blocks
        self.ln_attn, self.ln_ffn = ((nn.Identity(), nn.Identity()) if norm == "scaled"
                                     else (nn.LayerNorm(width), nn.LayerNorm(width)))
        for layer in (self.q, self.k, self.v, self.o, self.fc1, self.fc2):
            scaled = layer in (self.v, self.o, self.fc1, self.fc2)
            nn.init.xavier_normal_(layer.weight, gain=beta if scaled else 1.0)
            nn.init.zeros_(layer.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        split = lambda t: t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)),
                                             is_causal=True)
        return self.o(out.transpose(1, 2).reshape(batch, length, width))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))

    def sublayer(self, x: torch.Tensor, branch, norm: nn.LayerNorm) -> torch.Tensor:
        if self.norm == "post_ln":
            return norm(x + branch(x))
        if self.norm == "pre_ln":
            return x + branch(norm(x))
        if self.norm in ("deepnorm", "su_adam"):
            return norm(self.alpha * x + branch(x))
        return x + self.branch_scale * branch(x)  # scaled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sublayer(x, self.attention, self.ln_attn)
        return self.sublayer(x, self.ffn, self.ln_ffn)


class TinyTransformerLM(nn.Module):
    """Decoder-only LM: embeddings → ``layers`` blocks → (final LN for pre_ln / scaled) → vocabulary logits.

    :meth:`features` is the model output F(x; θ) whose change ‖F(x; θ_t) − F(x; θ_0)‖ DeepNet tracks
    (Fig. 4–5): the last hidden state, after the final normalisation."""

    def __init__(self, vocabulary: int, layers: int, norm: str, width: int = 64, ffn_width: int = 128,
                 heads: int = 2, context: int = 64):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        if layers < 1:
            raise ValueError(f"layers must be ≥ 1, got {layers}")
        alpha, beta = 1.0, 1.0
        if norm == "deepnorm":
            alpha, beta = deepnorm_alpha_beta(0, layers)["decoder"]
        elif norm == "su_adam":
            alpha, beta = su_alpha_lambda(2 * layers, "adam")
        self.norm, self.layers, self.alpha, self.beta, self.context = norm, layers, alpha, beta, context
        self.token = nn.Embedding(vocabulary, width)
        self.position = nn.Embedding(context, width)
        nn.init.normal_(self.token.weight, std=0.5**0.5)  # x = token + position has unit variance,
        nn.init.normal_(self.position.weight, std=0.5**0.5)  # like the output of a LayerNorm
        scale = 1 / math.sqrt(2 * layers)
        self.blocks = nn.ModuleList(Block(width, ffn_width, heads, norm, alpha, beta, scale)
                                    for _ in range(layers))
        self.final_ln = nn.LayerNorm(width) if norm in ("pre_ln", "scaled") else nn.Identity()
        self.head = nn.Linear(width, vocabulary)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.context:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds the context {self.context}")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token(tokens) + self.position(positions)
        for block in self.blocks:
            x = block(x)
        return self.final_ln(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))


def is_weight_matrix(name: str) -> bool:
    """The parameters DeepNet's bound is about: the attention and FFN weight matrices of the blocks
    (not biases, LayerNorm gains, embeddings or the output head)."""
    return name.startswith("blocks.") and name.endswith(".weight") and ".ln_" not in name


def lm_one_step_update(model: TinyTransformerLM, windows: torch.Tensor, optimiser: str, lr: float,
                       matrices_only: bool = False) -> dict:
    """:func:`kitlib.deepnorm.one_step_update` for a language model: F = last hidden state (``features``) of
    windows[:, :-1], L = next-token cross-entropy; ``matrices_only`` steps only :func:`is_weight_matrix`."""
    from .deepnorm import one_step_update

    return one_step_update(model, windows[:, :-1], windows[:, 1:], optimiser, lr,
                           loss_fn=lambda m, x, y: F.cross_entropy(m(x).flatten(0, 1), y.flatten()),
                           output_fn=lambda m, x: m.features(x),
                           trainable=is_weight_matrix if matrices_only else None)


def random_windows(tokens: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` windows of ``length`` + 1 consecutive tokens from a 1-D token tensor, at random offsets."""
    starts = torch.randint(0, len(tokens) - length - 1, (batch,), generator=generator)
    return torch.stack([tokens[s : s + length + 1] for s in starts.tolist()])


def next_token_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting windows[:, 1:] from windows[:, :-1] (nats per token)."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


def train_language_model(model: TinyTransformerLM, tokens: torch.Tensor, *, steps: int, batch: int,
                         length: int, lr: float, warmup: int = 0, betas=(0.9, 0.98),
                         generator: torch.Generator, probe: torch.Tensor | None = None,
                         progress: bool = True, desc: str = "training") -> dict:
    """Adam on next-token cross-entropy for ``steps`` steps; lr ramps linearly over ``warmup`` steps, then
    stays constant. Returns per-step lists ``loss`` and (with a ``probe`` batch of inputs) ``update`` =
    rms over probe tokens of ‖F(x; θ_t) − F(x; θ_0)‖, the model update of DeepNet Fig. 4–5.

    A non-finite loss stops training and sets ``diverged`` to the step (None when it never happened):
    divergence is one of the outcomes the chapter compares, not an error.
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    device = next(model.parameters()).device  # windows are drawn on the CPU (CPU generator), then moved
    history = {"loss": [], "update": [], "diverged": None}
    if probe is not None:
        with torch.no_grad():
            initial = model.features(probe)
    for step in progress_bar(range(steps), desc, progress):
        for group in optimiser.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        windows = random_windows(tokens, batch, length, generator).to(device)
        loss = next_token_loss(model, windows)
        if not torch.isfinite(loss):
            history["diverged"] = step
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history["loss"].append(float(loss.detach()))
        if probe is not None:
            with torch.no_grad():
                change = model.features(probe) - initial
                history["update"].append(float(change.pow(2).sum(-1).mean().sqrt()))
    return history
