r"""Kernel machines with coefficients that do not depend on the query (chapter ``sgd-svm``, claim P9).

Given a (matrix-valued) kernel's training Gram G[i, j] ∈ R^{C×C} and the change of the outputs on the training
points, Δ_i = f_T(x_i) − f_0(x_i) ∈ R^C, fit one coefficient vector per training point,

    α = argmin ‖Σ_j G[i, j] α_j − Δ_i‖  (minimum-norm, through the eigenvalues of the symmetric (n C) × (n C)
                                            Gram above ``rcond`` · λ_max: the path kernel's Gram has a condition
                                            number of ~10¹¹),

and predict a query by β(x) + Σ_j K(x, x_j) α_j with β = f_0. Kernels: the path kernel, the tangent kernel at θ_0
(the initial NTK), a Gaussian (RBF) kernel, K_RBF(x, x') = exp(−‖x − x'‖² / 2h²) · I_C, and the final-feature
kernel K_h(x, x') = (h_T(x) · h_T(x') + 1) · I_C, with h_T the input of the trained network's linear read-out (the
read-out's share of the tangent kernel at θ_T: a network with a linear last layer is a linear model in h_T).
"""

from __future__ import annotations

import torch


def fit_fixed_alpha(train_gram: torch.Tensor, targets: torch.Tensor, rcond: float = 1e-12) -> torch.Tensor:
    """Minimum-norm least-squares α (n, C) of Σ_j G[i, j] α_j = targets_i for a symmetric PSD Gram G (n, n, C, C)
    (or (n, n) for C = 1, or a scalar kernel shared by all C outputs when G is (n, n) and targets (n, C)),
    keeping eigenvalues above rcond · λ_max."""
    n, C = targets.shape
    if train_gram.dim() == 2:                               # scalar kernel: the same n × n system for each output
        matrix, right = train_gram, targets
    else:
        matrix, right = train_gram.permute(0, 2, 1, 3).reshape(n * C, n * C), targets.reshape(-1, 1)
    eigenvalues, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    keep = eigenvalues > rcond * eigenvalues.max()
    v = vectors[:, keep]
    return (v @ ((v.T @ right) / eigenvalues[keep].unsqueeze(-1))).reshape(n, C)


def kernel_predict(query_gram: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Σ_j K(x_q, x_j) α_j, (n_q, C), for a Gram (n_q, n, C, C) or a scalar kernel (n_q, n) applied per output."""
    if query_gram.dim() == 2:
        return query_gram @ alpha
    return torch.einsum("qjcd,jd->qc", query_gram, alpha)


def rbf_gram(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """exp(−‖a_i − b_j‖² / 2h²), (n_a, n_b), on flattened inputs."""
    return torch.exp(-torch.cdist(a.flatten(1), b.flatten(1)) ** 2 / (2 * bandwidth ** 2))


def median_distance(x: torch.Tensor) -> float:
    """The median pairwise distance of the (flattened) inputs: the usual scale of an RBF bandwidth."""
    d = torch.cdist(x.flatten(1), x.flatten(1))
    return float(d[d > 0].median())


def rbf_predictions(x_train: torch.Tensor, targets: torch.Tensor, x_query: torch.Tensor,
                    scales: tuple = (0.25, 0.5, 1.0, 2.0), rcond: float = 1e-12) -> dict[float, torch.Tensor]:
    """Σ_j K_RBF(x_q, x_j) α_j with α fitted on the training Gram, one prediction (n_q, C) per bandwidth
    h = scale · median distance: the RBF null of claim P9 (the chapter keeps the best one, judged on the queries,
    which favours the null)."""
    h0 = median_distance(x_train)
    return {s: kernel_predict(rbf_gram(x_query, x_train, s * h0),
                              fit_fixed_alpha(rbf_gram(x_train, x_train, s * h0), targets, rcond)) for s in scales}


def final_feature_gram(model: torch.nn.Sequential, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h(a_i) · h(b_j) + 1, (n_a, n_b), where h = model[:-1] is everything before the final linear read-out
    (its input features): the scalar final-feature kernel of claim P9, shared by all C outputs."""
    with torch.no_grad():
        features = model[:-1]
        return features(a).flatten(1) @ features(b).flatten(1).T + 1
