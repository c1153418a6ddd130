"""Tiny Transformers with the residual/normalisation schemes DeepNet compares (chapter ``deepnet-residual``):
a decoder-only language model and an encoder-decoder model, 64-128-2 by default as in the paper's Fig. 5.

A block has two sublayers, causal self-attention and a ReLU FFN; with ``norm`` in :data:`NORMS`:

- "post_ln":   x ← LN(x + G(x))                      (the original Transformer)
- "pre_ln":    x ← x + G(LN(x)), final LN
- "deepnorm":  x ← LN(α x + G(x)), FFN, value and output projections initialised with gain β
               (Wang et al. 2022; q and k keep gain 1), (α, β) = ``deepnorm_alpha_beta(0, layers)["decoder"]``
- "su_adam":   as "deepnorm" with Su's Adam constants (α, λ) = ``su_alpha_lambda(2·layers, "adam")``
- "scaled":    x ← x + G(x)/√(2·layers), final LN     (the residual x + f/√L of Su's post, no LN inside)

All linear weights are Xavier-normal (gain 1 unless DeepNorm's β applies), biases zero, as in the DeepNet
paper's pseudocode. Embeddings are learned (token + position) and the output head is a separate Linear.

The encoder-decoder model (:class:`TinyTransformerSeq2Seq`) has bidirectional encoder blocks and decoder
blocks with a third sublayer, cross-attention (its value and output projections also get β), and the norms of
:data:`SEQ2SEQ_NORMS`: "post_ln", "pre_ln", "deepnorm" with the encoder-decoder constants of
``deepnorm_alpha_beta(N, M)``, and "post_ln_init" — Post-LN whose block l of N has all weight matrices
divided by $k_l=N-l+1$ after Xavier initialisation (DeepNet §3).

The data these models see is in :mod:`kitlib.sequence_batches`, their training loop in
:mod:`kitlib.transformer_training`, the one-step update measurement in :mod:`kitlib.update_size`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .deepnorm import deepnorm_alpha_beta, su_alpha_lambda

NORMS = ("post_ln", "pre_ln", "deepnorm", "su_adam", "scaled")
SEQ2SEQ_NORMS = ("post_ln", "post_ln_init", "pre_ln", "deepnorm")


class Block(nn.Module):
    """One Transformer block: self-attention sublayer then FFN sublayer, combined as ``norm`` says."""

    def __init__(self, width: int, ffn_width: int, heads: int, norm: str, alpha: float, beta: float,
                 branch_scale: float, causal: bool = True):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.norm, self.alpha, self.branch_scale, self.causal = heads, norm, alpha, branch_scale, causal
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
        return multi_head_attention(x, x, self.q, self.k, self.v, self.o, self.heads, self.causal)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))

    def sublayer(self, x: torch.Tensor, branch, norm: nn.LayerNorm) -> torch.Tensor:
        if self.norm in ("post_ln", "post_ln_init"):
            return norm(x + branch(x))
        if self.norm == "pre_ln":
            return x + branch(norm(x))
        if self.norm in ("deepnorm", "su_adam"):
            return norm(self.alpha * x + branch(x))
        return x + self.branch_scale * branch(x)  # scaled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sublayer(x, self.attention, self.ln_attn)
        return self.sublayer(x, self.ffn, self.ln_ffn)


def multi_head_attention(x: torch.Tensor, memory: torch.Tensor, q: nn.Linear, k: nn.Linear, v: nn.Linear,
                         o: nn.Linear, heads: int, causal: bool) -> torch.Tensor:
    """softmax(Q Kᵀ/√d_h) V per head, queries from x and keys/values from ``memory`` (x itself for
    self-attention), then the output projection."""
    batch, width = x.shape[0], x.shape[-1]
    split = lambda t: t.view(batch, -1, heads, width // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q(x)), split(k(memory)), split(v(memory)), is_causal=causal)
    return o(out.transpose(1, 2).reshape(batch, -1, width))


class DecoderBlock(Block):
    """Causal self-attention, cross-attention to the encoder output, FFN — three sublayers, each combined as
    ``norm`` says; cross-attention's value and output projections are initialised with gain β."""

    def __init__(self, width: int, ffn_width: int, heads: int, norm: str, alpha: float, beta: float):
        super().__init__(width, ffn_width, heads, norm, alpha, beta, branch_scale=1.0, causal=True)
        self.cq, self.ck, self.cv, self.co = (nn.Linear(width, width) for _ in range(4))
        self.ln_cross = nn.LayerNorm(width)
        for layer in (self.cq, self.ck, self.cv, self.co):
            nn.init.xavier_normal_(layer.weight, gain=beta if layer in (self.cv, self.co) else 1.0)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.sublayer(x, self.attention, self.ln_attn)
        cross = lambda h: multi_head_attention(h, memory, self.cq, self.ck, self.cv, self.co,  # noqa: E731
                                               self.heads, causal=False)
        x = self.sublayer(x, cross, self.ln_cross)
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
    """The parameters of a :class:`TinyTransformerLM` that DeepNet's bound is about: the attention and FFN
    weight matrices of the blocks (not biases, LayerNorm gains, embeddings or the output head)."""
    return name.startswith("blocks.") and name.endswith(".weight") and ".ln_" not in name


def is_block_matrix(name: str) -> bool:
    """The same for a :class:`TinyTransformerSeq2Seq`: the encoder's and decoder's attention (self and cross)
    and FFN weight matrices."""
    return name.startswith(("encoder.", "decoder.")) and name.endswith(".weight") and ".ln_" not in name


class TinyTransformerSeq2Seq(nn.Module):
    """Encoder-decoder Transformer: ``encoder_layers`` bidirectional blocks over the source, ``decoder_layers``
    :class:`DecoderBlock` over the shifted target, one vocabulary for both (a synthetic task needs no more).

    :meth:`features` (the decoder's last hidden state, after the final LN for pre_ln) is the model output F
    whose change DeepNet tracks."""

    def __init__(self, vocabulary: int, encoder_layers: int, decoder_layers: int, norm: str, width: int = 64,
                 ffn_width: int = 128, heads: int = 2, context: int = 64):
        super().__init__()
        if norm not in SEQ2SEQ_NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {SEQ2SEQ_NORMS}")
        if encoder_layers < 1 or decoder_layers < 1:
            raise ValueError(f"layers must be ≥ 1, got {encoder_layers} and {decoder_layers}")
        constants = deepnorm_alpha_beta(encoder_layers, decoder_layers)
        (alpha_e, beta_e), (alpha_d, beta_d) = (
            (constants["encoder"], constants["decoder"]) if norm == "deepnorm" else ((1.0, 1.0), (1.0, 1.0)))
        self.norm, self.context = norm, context
        self.source_token, self.target_token = nn.Embedding(vocabulary, width), nn.Embedding(vocabulary, width)
        self.source_position, self.target_position = nn.Embedding(context, width), nn.Embedding(context, width)
        for embedding in (self.source_token, self.target_token, self.source_position, self.target_position):
            nn.init.normal_(embedding.weight, std=0.5**0.5)
        self.encoder = nn.ModuleList(Block(width, ffn_width, heads, norm, alpha_e, beta_e, 1.0, causal=False)
                                     for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(DecoderBlock(width, ffn_width, heads, norm, alpha_d, beta_d)
                                     for _ in range(decoder_layers))
        if norm == "post_ln_init":
            for blocks in (self.encoder, self.decoder):
                for index, block in enumerate(blocks):
                    with torch.no_grad():
                        for name, parameter in block.named_parameters():
                            if name.endswith("weight") and not name.startswith("ln_"):
                                parameter.div_(len(blocks) - index)  # k_l = N − l + 1, l = index + 1
        final = norm == "pre_ln"
        self.encoder_ln = nn.LayerNorm(width) if final else nn.Identity()
        self.decoder_ln = nn.LayerNorm(width) if final else nn.Identity()
        self.head = nn.Linear(width, vocabulary)

    def _embed(self, tokens, token, position):
        if tokens.shape[1] > self.context:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds the context {self.context}")
        return token(tokens) + position(torch.arange(tokens.shape[1], device=tokens.device))

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        x = self._embed(source, self.source_token, self.source_position)
        for block in self.encoder:
            x = block(x)
        return self.encoder_ln(x)

    def features(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        memory = self.encode(source)
        x = self._embed(target_in, self.target_token, self.target_position)
        for block in self.decoder:
            x = block(x, memory)
        return self.decoder_ln(x)

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(source, target_in))
