"""A tiny character-level Transformer LM whose attention can be swapped after training (chapter ``performer``).

Pre-LN blocks (x ← x + Attn(LN x); x ← x + FFN(LN x)), learned token and position embeddings, causal
attention in one of :data:`ATTENTIONS`:

- ``softmax``: exact $\\mathrm{softmax}(QK^\\top/\\sqrt{d_h})V$ (masked);
- ``favor``: FAVOR+ (:func:`kitlib.attention.favor_attention`) with m positive orthogonal random features per
  head, fixed after :meth:`AttentionLM.draw_features` (the same q, k, v weights: a Performer can load a
  softmax-trained checkpoint);
- ``linear``: $\\phi=\\mathrm{elu}+1$ linear attention (Katharopoulos et al. 2020);
- ``uniform``: average pooling over the prefix ($\\phi\\equiv1$), what attention becomes with no preference.

The model is small on purpose: the chapter trains it in seconds on a CPU and compares the attentions on the
same weights. ``kitlib.tiny_transformers`` holds the DeepNet chapter's models; this one only needs a pluggable
attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .attention import elu_features, favor_attention, linear_attention, orthogonal_gaussian

ATTENTIONS = ("softmax", "favor", "linear", "uniform")


class SwappableAttention(nn.Module):
    """Multi-head causal self-attention; ``mode`` selects how $\\mathrm{softmax}(QK^\\top)$ is computed."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.head_width = heads, width // heads
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mode = "softmax"
        self.register_buffer("omega", torch.empty(heads, 0, self.head_width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, width = x.shape
        q, k, v = (t.view(batch, n, self.heads, self.head_width).transpose(1, 2)
                   for t in self.qkv(x).split(width, dim=-1))
        if self.mode == "softmax":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.mode == "favor":
            y = favor_attention(q, k, v, self.omega, causal=True, chunk=None)
        elif self.mode == "linear":
            y = linear_attention(elu_features(q), elu_features(k), v, causal=True, chunk=None)
        else:  # uniform: every earlier position weighted equally (φ ≡ 1)
            ones = torch.ones_like(q[..., :1])
            y = linear_attention(ones, ones, v, causal=True, chunk=None)
        return self.out(y.transpose(1, 2).reshape(batch, n, width))


class AttentionLM(nn.Module):
    """Decoder-only character LM: embeddings → ``layers`` pre-LN blocks → LN → logits over the alphabet."""

    def __init__(self, vocabulary: int, width: int = 64, layers: int = 2, heads: int = 4, context: int = 64):
        super().__init__()
        self.context = context
        self.token, self.position = nn.Embedding(vocabulary, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            block = nn.ModuleDict({"ln1": nn.LayerNorm(width), "attention": SwappableAttention(width, heads),
                                   "ln2": nn.LayerNorm(width),
                                   "ffn": nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                                        nn.Linear(4 * width, width))})
            self.blocks.append(block)
        self.final_ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocabulary)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def attention_layers(self) -> list[SwappableAttention]:
        return [block["attention"] for block in self.blocks]

    def set_attention(self, mode: str) -> None:
        """Switch every layer to ``mode`` (one of :data:`ATTENTIONS`); ``favor`` needs :meth:`draw_features`."""
        if mode not in ATTENTIONS:
            raise ValueError(f"unknown attention {mode!r}; choose one of {ATTENTIONS}")
        for layer in self.attention_layers():
            if mode == "favor" and layer.omega.shape[1] == 0:
                raise RuntimeError("call draw_features(m, generator) before switching to FAVOR+")
            layer.mode = mode

    def draw_features(self, m: int, generator: torch.Generator) -> None:
        """Fresh positive orthogonal random features: m per head and layer (FAVOR+'s ω)."""
        for layer in self.attention_layers():
            layer.omega = torch.stack([orthogonal_gaussian(m, layer.head_width, generator, dtype=torch.float32)
                                       for _ in range(layer.heads)]).to(layer.qkv.weight.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token(tokens) + self.position(positions)
        for block in self.blocks:
            x = x + block["attention"](block["ln1"](x))
            x = x + block["ffn"](block["ln2"](x))
        return self.head(self.final_ln(x))


def random_windows(tokens: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, length + 1) windows of consecutive tokens at random offsets: inputs [:, :-1], targets [:, 1:]."""
    starts = torch.randint(0, len(tokens) - length - 1, (batch,), generator=generator)
    return torch.stack([tokens[s:s + length + 1] for s in starts.tolist()])


def next_token_loss(model: AttentionLM, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per character) of predicting windows[:, 1:] from windows[:, :-1]."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate_loss(model: AttentionLM, windows: torch.Tensor, batch: int = 64) -> float:
    """Mean next-character loss over fixed evaluation windows (eval mode)."""
    model.eval()
    losses = [next_token_loss(model, windows[i:i + batch]) * len(windows[i:i + batch])
              for i in range(0, len(windows), batch)]
    return float(sum(losses) / len(windows))


def train_steps(model: AttentionLM, tokens: torch.Tensor, steps: int, *, batch: int, lr: float,
                generator: torch.Generator, device: torch.device, warmup: int = 50) -> list[float]:
    """``steps`` of AdamW (β = (0.9, 0.99), weight decay 0.01, linear warm-up then cosine decay to lr/10,
    gradient clipping at 1) on random windows of ``tokens``; returns the training losses."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    model.train()
    losses = []
    for _ in range(steps):
        windows = random_windows(tokens, batch, model.context, generator).to(device)
        loss = next_token_loss(model, windows)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} after {len(losses)} steps: lower the lr")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        losses.append(loss.item())
    return losses
