"""Per-layer gradient norms of a Transformer (chapter ``deepnet-residual``, the DeepNet paper's Fig. 3).

For block l with weight matrices W_{l,1}, …, W_{l,k} (attention and FFN, not biases or LayerNorm gains):

    g_l = ( Σ_j ‖∂L/∂W_{l,j}‖_F² )^{1/2},

the Frobenius norm of the gradient of the loss over the block's weight matrices. DeepNet §3 compares these
norms for Post-LN and Post-LN-init in the top layers of 18L-18L models (Fig. 3(a)) and in the last layer at
several depths (Fig. 3(b)), and reports Post-LN-init's as the larger; :func:`last_block_gradient_trace` follows
the last block's g_l over the first Adam steps (the chapter finds it smaller at initialisation, larger a few
steps later).
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


def last_block_gradient_trace(model: nn.Module, stack: nn.ModuleList, loss_of, *, steps: int, lr: float,
                              betas=(0.9, 0.98)) -> list[float]:
    """g_l (above) of the LAST block of ``stack`` at the initialisation θ_0 and after each of ``steps`` steps of
    Adam (η = ``lr``, no warm-up, every parameter of ``model``) on ``loss_of()`` (a scalar loss, recomputed each
    step — the same batch if the closure holds one). DeepNet's Fig. 3(b) plots this norm for the last layer of
    Post-LN and Post-LN-init at several depths. Returns ``steps + 1`` floats: [g(θ_0), g(θ_1), …]."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    matrices = [p for name, p in stack[-1].named_parameters() if name.endswith("weight") and not name.startswith("ln_")]
    trace = []
    for step in range(steps + 1):
        optimiser.zero_grad()
        loss_of().backward()
        trace.append(float(torch.stack([p.grad.pow(2).sum() for p in matrices]).sum().sqrt()))
        if step < steps:
            optimiser.step()
    return trace
