"""A classification task on which the differentiable surrogate and the task loss disagree
(sampling-optimisation, claim O10).

The task loss is the balanced error, one minus the macro-averaged recall,

$$C(\\theta)=1-\\frac1{|\\mathcal Y|}\\sum_{c\\in\\mathcal Y}\\frac{\\#\\{i: y_i=c,\\ \\hat y_i(\\theta)=c\\}}{\\#\\{i: y_i=c\\}},$$

on an imbalanced training set, where every class weighs the same in $C$ but the surrogate, the mean
cross-entropy $\\frac1n\\sum_i-\\log p_\\theta(y_i\\mid x_i)$, weighs each class by its frequency: its gradient
favours the majority classes. Classifiers are linear, ``weights`` (K, d_in + 1, classes), the last row the bias.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import digits_split
from .imbalance import per_class_recall
from .sampling_search import SearchTrace


def imbalanced_subset(labels: np.ndarray, keep: dict[int, float], rng: np.random.Generator) -> np.ndarray:
    """Indices of a subset that keeps the fraction ``keep[c]`` of class c (at least 2 examples), all of the
    classes not in ``keep``; sorted."""
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = len(members) if c not in keep else max(2, int(round(keep[c] * len(members))))
        chosen.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(chosen))


def balanced_error(weights: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """$1-$ macro recall of linear classifiers, batched: weights (K, d_in + 1, classes) → (K,); classes absent from
    ``labels`` are left out of the mean (``kitlib.imbalance.per_class_recall`` gives them NaN)."""
    scores = features @ weights[:, :-1] + weights[:, -1:, :]
    return 1 - per_class_recall(scores.argmax(-1), labels, classes).nanmean(-1)


def imbalanced_digits(seed: int, dims: int, minority_fraction: float,
                      minority: tuple = (5, 6, 7, 8, 9)) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits training split of ``seed`` (float64), projected on its first ``dims`` principal components
    (each scaled to unit variance over the whole split; so few that a linear classifier cannot separate the
    classes), keeping the
    fraction ``minority_fraction`` of each ``minority`` class: features (n, dims), labels (n,)."""
    split = digits_split(np.random.default_rng(seed), n_val=0, n_test=1)
    centred = split.x_train.double() - split.x_train.double().mean(0)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    features = centred @ vt[:dims].T
    features = features / features.std(0)
    keep = imbalanced_subset(split.y_train.numpy(), {c: minority_fraction for c in minority},
                             np.random.default_rng(seed))
    return features[keep], split.y_train[keep]


def weighted_cross_entropy_gradient(weights: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                                    class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of $L=\\sum_iw_{y_i}\\,[-\\log p_\\theta(y_i\\mid x_i)]/\\sum_iw_{y_i}$ for one linear classifier
    (d_in + 1, classes), in closed form: with $s_i=\\mathrm{softmax}(x_i^\\top W+b)$ and one-hot $e_{y_i}$,
    $\\nabla_W L=\\sum_iw_{y_i}x_i(s_i-e_{y_i})^\\top/\\sum_iw_{y_i}$ and the same without $x_i$ for $b$.
    ``class_weights=None`` is the plain mean cross-entropy."""
    scores = features @ weights[:-1] + weights[-1]
    residual = scores.softmax(-1) - torch.nn.functional.one_hot(labels, weights.shape[1]).to(scores.dtype)
    row_weights = torch.ones_like(labels, dtype=scores.dtype) if class_weights is None else class_weights[labels]
    residual = residual * (row_weights / row_weights.sum())[:, None]
    return torch.cat([features.T @ residual, residual.sum(0, keepdim=True)])


def surrogate_descent(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int, step_size: float,
                      task_loss, class_weights: torch.Tensor | None = None) -> SearchTrace:
    """Gradient descent on the (class-weighted) cross-entropy from $\\theta=0$, gradient clipped to norm 1,
    $\\theta\\leftarrow\\theta-\\eta\\,\\nabla/\\max(1,\\|\\nabla\\|)$; one evaluation (the gradient) a step. The
    trace holds ``task_loss`` (K, d_in + 1, classes) → (K,) after each step, which the descent never sees."""
    theta = torch.zeros(features.shape[1] + 1, classes, dtype=features.dtype)
    trace = SearchTrace([0], [float(task_loss(theta[None])[0])])
    for _ in range(steps):
        gradient = weighted_cross_entropy_gradient(theta, features, labels, class_weights)
        theta = theta - step_size * gradient / max(1.0, float(gradient.norm()))
        trace.evaluations.append(trace.evaluations[-1] + 1)
        trace.errors.append(float(task_loss(theta[None])[0]))
    return trace
