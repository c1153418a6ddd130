r"""Does a query's path-kernel neighbourhood matter? Retrain without chosen training points (chapter ``sgd-svm``,
claim P10).

One copy of the model per row of a 0/1 mask M (m, n) is trained from the same θ_0 by full-batch gradient descent
on the mean loss over the kept points,

    L_k(θ) = Σ_i M_ki ℓ(f_θ(x_i), y_i) / Σ_i M_ki,     θ ← θ − η ∇L_k(θ),

all copies at once (``torch.func.vmap`` over stacked parameters). The effect of removing a set S on a query x is
‖f_{θ_T(S)}(x) − f_{θ_T}(x)‖, compared between S = the top-k neighbours of x under a similarity (the path kernel
and its competitors: input distance, the initial tangent kernel; :func:`top_k_indices`), k random points of the
query's class (:func:`same_class_random_indices`) and random sets of k (:func:`removal_ratios`). The claim's
statistic divides each ranking's effect by that of random points of the query's own class
(:func:`ratios_to_reference`), so that class membership alone does not count as "the neighbourhood matters".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap


def masked_gd_outputs(model: nn.Module, per_example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      x_train: torch.Tensor, y_train: torch.Tensor, masks: torch.Tensor, x_query: torch.Tensor,
                      lr: float, steps: int) -> torch.Tensor:
    """Outputs (m, n_q, C) at ``x_query`` of m copies of ``model`` (all starting from its current parameters),
    copy k trained by full-batch GD on the mean of ``per_example_loss(outputs, targets)`` (n,) over the points
    with masks[k, i] = 1. The module itself is not changed."""
    start = {name: p.detach() for name, p in model.named_parameters()}
    stacked = {name: p.expand(len(masks), *p.shape).clone().requires_grad_(True) for name, p in start.items()}
    masks = masks.to(dtype=x_train.dtype)

    def loss(params, mask):
        losses = per_example_loss(functional_call(model, params, (x_train,)), y_train)
        return (losses * mask).sum() / mask.sum()

    # the copies do not interact, so the gradient of Σ_k L_k with respect to copy k's parameters is ∇L_k: one
    # backward pass of the batched forward (plain autograd, which spares torch.func.grad's import of torch._dynamo)
    batched_loss = vmap(loss)
    for _ in range(steps):
        gradients = torch.autograd.grad(batched_loss(stacked, masks).sum(), list(stacked.values()))
        stacked = {name: (p - lr * g).detach().requires_grad_(True)
                   for (name, p), g in zip(stacked.items(), gradients)}
    with torch.no_grad():
        return vmap(lambda params: functional_call(model, params, (x_query,)))(stacked).detach()


def removal_masks(n: int, removed: list[torch.Tensor]) -> torch.Tensor:
    """(1 + len(removed), n) masks: all points, then all but each given index set."""
    masks = torch.ones(1 + len(removed), n)
    for k, idx in enumerate(removed):
        masks[k + 1, idx] = 0
    return masks


def top_k_indices(similarity: torch.Tensor, k: int) -> list[torch.Tensor]:
    """For each query (row of ``similarity``, (n_q, n)), the indices of its k most similar training points (on
    the CPU, as :func:`removal_masks` takes them)."""
    return list(similarity.topk(k, dim=1).indices.cpu())


def same_class_random_indices(labels: torch.Tensor, classes: torch.Tensor, k: int,
                              generator: torch.Generator) -> list[torch.Tensor]:
    """For each query, k training points drawn at random (without replacement) among those whose label is the
    query's class ``classes[q]``: the competitor 'random points of the same class' of claim P10."""
    labels = labels.cpu()
    out = []
    for c in classes.cpu():
        pool = torch.nonzero(labels == c).flatten()
        out.append(pool[torch.randperm(len(pool), generator=generator)[:k]])
    return out


def geometric_mean(values: torch.Tensor) -> float:
    """exp(mean log v) of positive values."""
    return float(values.log().mean().exp())


def removal_ratios(change: torch.Tensor, n_rankings: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The statistic of claim P10 from the changes ‖f_{θ_T(S)}(x_q) − f_{θ_T}(x_q)‖, ``change`` (m, n_q), of the
    removal sets in the order [ranking 1: one set per query, …, ranking R: one set per query, random set 1, …]
    (m = R n_q + n_random):

        own[r, q] = change[set of ranking r chosen for query q, q],   ratio[r, q] = own[r, q] / mean_s random[s, q]

    returns (ratio (R, n_q), null (n_random, n_q)), where the null scores each random set in the same way
    against the mean of the *other* random sets, random[s, q] / mean_{s' ≠ s} random[s', q]. Their geometric
    means over queries (and sets) are the claim's values."""
    n_q = change.shape[1]
    own = change[: n_rankings * n_q].view(n_rankings, n_q, n_q).diagonal(dim1=1, dim2=2)
    random = change[n_rankings * n_q:]
    others = (random.sum(0) - random) / (len(random) - 1)
    return own / random.mean(0), random / others


def ratios_to_reference(own: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Effects ``own`` (R, n_q) of R rankings divided by the mean effect of D reference draws ``reference``
    (D, n_q) for the same query (D ≥ 2; in P10 the draws are random points of the query's predicted class):

        ratio[r, q] = own[r, q] / mean_d reference[d, q],
        null[d, q] = reference[d, q] / mean_{d' ≠ d} reference[d', q]

    returns (ratio (R, n_q), null (D, n_q)): the null scores each reference draw like a ranking, against the
    others (leave one out)."""
    others = (reference.sum(0) - reference) / (len(reference) - 1)
    return own / reference.mean(0), reference / others
