"""Per-layer gradient norms of a Transformer (chapter ``deepnet-residual``, the DeepNet paper's Fig. 3(b)).

For block l with weight matrices W_{l,1}, …, W_{l,k} (attention and FFN, not biases or LayerNorm gains):

    g_l = ( Σ_j ‖∂L/∂W_{l,j}‖_F² )^{1/2},

the Frobenius norm of the gradient of the loss over the block's weight matrices. DeepNet §3 compares these
norms for Post-LN and Post-LN-init across the layers of an 18L-18L model: Post-LN-init has the *larger*
gradients at the top layers and still trains, so the size of the gradient is not what makes Post-LN fail.
"""

from __future__ import annotations

import torch
from torch import nn


def block_gradient_norms(loss: torch.Tensor, *stacks: nn.ModuleList) -> list[torch.Tensor]:
    """g_l for every block of each of ``stacks`` (one tensor of shape (len(stack),) per stack), from one
    backward pass of ``loss`` (a scalar that depends on the blocks' parameters). Weight matrices are the
    parameters named ``*.weight`` outside LayerNorms (``ln_*``); the gradients come from
    :func:`torch.autograd.grad`, so ``.grad`` is untouched."""
    groups = [[[p for name, p in block.named_parameters() if name.endswith("weight") and not name.startswith("ln_")]
               for block in stack] for stack in stacks]
    flat = [p for stack in groups for block in stack for p in block]
    grads = iter(torch.autograd.grad(loss, flat, allow_unused=True))
    out = []
    for stack in groups:
        norms = []
        for block in stack:
            squares = [g.pow(2).sum() if g is not None else torch.zeros(()) for g in (next(grads) for _ in block)]
            norms.append(torch.stack(squares).sum().sqrt())
        out.append(torch.stack(norms).detach())
    return out
