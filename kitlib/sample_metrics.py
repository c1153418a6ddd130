"""Numbers about sets of samples, for the ``wgan`` chapter's minibatch-W1 experiments (§4, §5): how often a
candidate set beats a real batch in exact W1, the geometric median (the batch-size-1 minimiser), pixel
sharpness and spread."""

from __future__ import annotations

import numpy as np

from .ot import exact_w1


def batch_w1_against_real(data: np.ndarray, candidate: np.ndarray, draws: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For ``draws`` random real batches X of m = len(candidate) rows of ``data`` (without replacement):
    W1(X, X') for a second real batch X' and W1(X, candidate). Returns the two arrays, shape (draws,); the
    candidate "wins" a draw where its W1 is the smaller. Used for the batch-W1 tables of claim W6."""
    data, candidate = np.asarray(data, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    m = len(candidate)
    real_real, real_candidate = np.empty(draws), np.empty(draws)
    for k in range(draws):
        real = data[rng.choice(len(data), m, replace=False)]
        real_real[k] = exact_w1(real, data[rng.choice(len(data), m, replace=False)])
        real_candidate[k] = exact_w1(real, candidate)
    return real_real, real_candidate


def weiszfeld_median(points: np.ndarray, iterations: int = 2000, tol: float = 1e-12) -> np.ndarray:
    """The geometric median argmin_y Σ_i ‖x_i − y‖ by Weiszfeld's iteration y ← Σ w_i x_i / Σ w_i,
    w_i = 1/‖x_i − y‖ (starting from the mean; a point that coincides with y is nudged off by 1e-12).
    points (n, d) → (d,). Claim W8."""
    points = np.asarray(points, dtype=np.float64)
    y = points.mean(axis=0)
    for _ in range(iterations):
        distances = np.maximum(np.linalg.norm(points - y, axis=1), 1e-12)
        weights = 1 / distances
        new = weights @ points / weights.sum()
        if np.linalg.norm(new - y) < tol:
            return new
        y = new
    return y


def mean_distance(points: np.ndarray, y: np.ndarray) -> float:
    """E‖x − y‖ over the rows x of ``points`` (n, d), y (d,): the batch-size-1 W1 objective."""
    return float(np.linalg.norm(np.asarray(points) - np.asarray(y), axis=1).mean())


def pixel_sharpness(images) -> float:
    """mean |2x − 1| over pixels in [0, 1] (any shape; values are clipped to [0, 1]): 1 for pure black/white
    images, 0 for uniform grey. Averages of images (blur) move pixels towards the middle and lower it."""
    values = np.asarray(images, dtype=np.float64)
    return float(np.abs(2 * np.clip(values, 0, 1) - 1).mean())


def spread(points) -> float:
    """E‖x − x̄‖: the mean distance of the rows of ``points`` (n, d) from their own mean. 0 for copies of one
    image; for the k-means centres of a data set, how far apart "close to everything" lies (claim W10)."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    return mean_distance(points, points.mean(axis=0))
