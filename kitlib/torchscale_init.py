"""DeepNorm's initialisation as microsoft/torchscale actually runs it (chapter ``deepnet-residual``, §7).

The paper (DeepNet, Wang et al. 2022) initialises every attention and FFN weight Xavier-normal and multiplies
the FFN, value and output projections by β. torchscale (``architecture/encoder.py``, ``decoder.py``,
``component/multihead_attention.py``, ``feedforward_network.py``; read at commit 4d1e0e8) differs in two ways:

1. its base initialisation: every projection is an ``nn.Linear`` with PyTorch's default initialisation,
   W ~ U(−1/√fan_in, 1/√fan_in) (std 1/√(3 fan_in)) and bias ~ U(−1/√fan_in, 1/√fan_in).
   ``MultiheadAttention.reset_parameters`` — Xavier-uniform with gain 1/√2 for q, k, v, gain 1 for the output
   projection, zero output bias, as in fairseq — is defined but never called by torchscale itself
   (``attention_reset=True`` applies it, the reading of a caller that does call it);
2. its scale: after building the stack it divides the *weights and biases* of ``fc1``, ``fc2``, ``v_proj`` and
   ``out_proj`` (cross-attention included) by ``init_scale``:

       encoder of an encoder-decoder:  (N⁴M)^{1/16} / 1.15     (the paper: β_e = 0.87 (N⁴M)^{−1/16})
       decoder of an encoder-decoder:  (12M)^{1/4}             (the paper: β_d = (12M)^{−1/4})
       decoder-only:                   (8M)^{1/4}              (the paper: β = (8M)^{−1/4})

α is the paper's in every case (``0.81 (N⁴M)^{1/16}``, ``(3M)^{1/4}``, ``(2M)^{1/4}``), as in
:class:`kitlib.tiny_transformers.TinyTransformerSeq2Seq` and :class:`~kitlib.tiny_transformers.TinyTransformerLM`
with ``norm="deepnorm"``, whose blocks :func:`torchscale_init_` re-initialises in place.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .tiny_transformers import TinyTransformerLM, TinyTransformerSeq2Seq

SCALED = ("v", "o", "fc1", "fc2", "cv", "co")  # torchscale's v_proj, out_proj, fc1, fc2 (self and cross)


def torchscale_init_scales(encoder_layers: int, decoder_layers: int) -> dict:
    """torchscale's divisors ``init_scale``: {"encoder": …, "decoder": …} for an encoder-decoder
    (encoder_layers ≥ 1), {"decoder": (8M)^{1/4}} for a decoder-only model (encoder_layers = 0)."""
    n, m = encoder_layers, decoder_layers
    if n == 0:
        return {"decoder": (8.0 * m) ** 0.25}
    return {"encoder": (n**4 * m) ** 0.0625 / 1.15, "decoder": (12.0 * m) ** 0.25}


def _reinit_block(block: nn.Module, scale: float, attention_reset: bool) -> None:
    linears = {name: module for name, module in block.named_children() if isinstance(module, nn.Linear)}
    with torch.no_grad():
        for name, layer in linears.items():
            layer.reset_parameters()  # PyTorch's default: kaiming-uniform(a=√5) weight, uniform bias
            if attention_reset and name in ("q", "k", "v", "cq", "ck", "cv"):
                nn.init.xavier_uniform_(layer.weight, gain=1 / math.sqrt(2))
            if attention_reset and name in ("o", "co"):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
            if name in SCALED:
                layer.weight.div_(scale)
                layer.bias.div_(scale)


def torchscale_init_(model: TinyTransformerLM | TinyTransformerSeq2Seq, *, attention_reset: bool = False):
    """Re-initialise the blocks of a DeepNorm model (``norm="deepnorm"``) as torchscale does (module docstring);
    embeddings, LayerNorms and the output head are left as they are. Returns the model."""
    if model.norm != "deepnorm":
        raise ValueError(f"torchscale's DeepNorm initialisation needs a 'deepnorm' model, got {model.norm!r}")
    if isinstance(model, TinyTransformerSeq2Seq):
        scales = torchscale_init_scales(len(model.encoder), len(model.decoder))
        stacks = ((model.encoder, scales["encoder"]), (model.decoder, scales["decoder"]))
    else:
        stacks = ((model.blocks, torchscale_init_scales(0, model.layers)["decoder"]),)
    for blocks, scale in stacks:
        for block in blocks:
            _reinit_block(block, scale, attention_reset)
    return model


def branch_weight_stds(block: nn.Module) -> dict:
    """Standard deviation of the weights of each projection of ``block`` ({"q": …, "fc2": …}): the scale the
    chapter compares between the paper's initialisation and torchscale's."""
    return {name: float(module.weight.detach().std()) for name, module in block.named_children()
            if isinstance(module, nn.Linear)}
