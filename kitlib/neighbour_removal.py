r"""Does a query's path-kernel neighbourhood matter? Retrain without chosen training points (chapter ``sgd-svm``,
claim P10).

One copy of the model per row of a 0/1 mask M (m, n) is trained from the same θ_0 by full-batch gradient descent
on the mean loss over the kept points,

    L_k(θ) = Σ_i M_ki ℓ(f_θ(x_i), y_i) / Σ_i M_ki,     θ ← θ − η ∇L_k(θ),

all copies at once (``torch.func.vmap`` over stacked parameters). The effect of removing a set S on a query x is
‖f_{θ_T(S)}(x) − f_{θ_T}(x)‖, compared between S = the top-k path-kernel neighbours of x and random sets of k.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def masked_gd_outputs(model: nn.Module, per_example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      x_train: torch.Tensor, y_train: torch.Tensor, masks: torch.Tensor, x_query: torch.Tensor,
                      lr: float, steps: int) -> torch.Tensor:
    """Outputs (m, n_q, C) at ``x_query`` of m copies of ``model`` (all starting from its current parameters),
    copy k trained by full-batch GD on the mean of ``per_example_loss(outputs, targets)`` (n,) over the points
    with masks[k, i] = 1. The module itself is not changed."""
    start = {name: p.detach() for name, p in model.named_parameters()}
    stacked = {name: p.expand(len(masks), *p.shape).clone() for name, p in start.items()}
    masks = masks.to(dtype=x_train.dtype)

    def loss(params, mask):
        losses = per_example_loss(functional_call(model, params, (x_train,)), y_train)
        return (losses * mask).sum() / mask.sum()

    step_gradient = vmap(grad(loss))
    for _ in range(steps):
        gradients = step_gradient(stacked, masks)
        stacked = {name: stacked[name] - lr * gradients[name] for name in stacked}
    return vmap(lambda params: functional_call(model, params, (x_query,)))(stacked).detach()


def removal_masks(n: int, removed: list[torch.Tensor]) -> torch.Tensor:
    """(1 + len(removed), n) masks: all points, then all but each given index set."""
    masks = torch.ones(1 + len(removed), n)
    for k, idx in enumerate(removed):
        masks[k + 1, idx] = 0
    return masks
