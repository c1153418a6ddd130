"""kitlib.surrogate_tasks against scikit-learn and finite differences."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from kitlib.surrogate_tasks import (balanced_error, imbalanced_digits, imbalanced_subset, surrogate_descent,
                                    weighted_cross_entropy_gradient)


def test_balanced_error_is_one_minus_sklearns_balanced_accuracy():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=generator)
    weights = torch.randn(5, 5, 3, generator=generator, dtype=torch.float64)
    ours = balanced_error(weights, x, y, 3)
    for k in range(5):
        predicted = (x @ weights[k, :-1] + weights[k, -1]).argmax(-1)
        assert float(ours[k]) == pytest.approx(1 - balanced_accuracy_score(y.numpy(), predicted.numpy()))
    # the plain 0-1 error is a plausible wrong version: it differs on imbalanced labels
    y_imbalanced = torch.tensor([0] * 50 + [1] * 10)
    always_zero = torch.zeros(1, 5, 2, dtype=torch.float64)
    always_zero[0, -1, 0] = 1.0
    assert float(balanced_error(always_zero, x, y_imbalanced, 2)[0]) == pytest.approx(0.5)


def test_imbalanced_subset_and_digits_keep_the_asked_fractions():
    labels = np.repeat(np.arange(4), 100)
    keep = imbalanced_subset(labels, {2: 0.05, 3: 0.0}, np.random.default_rng(0))
    assert np.bincount(labels[keep]).tolist() == [100, 100, 5, 2]
    x, y = imbalanced_digits(0, 8, 0.03)
    counts = torch.bincount(y).tolist()
    assert x.shape == (len(y), 8) and max(counts[5:]) <= 6 and min(counts[:5]) > 150
    assert torch.linalg.matrix_rank(x) == 8


def test_weighted_cross_entropy_gradient_against_finite_differences():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=generator)
    theta = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    class_weights = torch.tensor([1.0, 5.0, 0.5], dtype=torch.float64)

    def loss(t):
        nll = -(x @ t[:-1] + t[-1]).log_softmax(-1)[torch.arange(30), y]
        return float((class_weights[y] * nll).sum() / class_weights[y].sum())

    gradient = weighted_cross_entropy_gradient(theta, x, y, class_weights)
    step = 1e-6
    for index in [(0, 0), (2, 1), (3, 2)]:
        bumped, lowered = theta.clone(), theta.clone()
        bumped[index] += step
        lowered[index] -= step
        assert float(gradient[index]) == pytest.approx((loss(bumped) - loss(lowered)) / (2 * step), rel=1e-5)


def test_surrogate_descent_spends_one_evaluation_a_step_and_lowers_the_cross_entropy():
    generator = torch.Generator().manual_seed(2)
    centres = torch.randn(3, 4, generator=generator, dtype=torch.float64) * 3
    y = torch.randint(0, 3, (200,), generator=generator)
    x = centres[y] + torch.randn(200, 4, generator=generator, dtype=torch.float64)
    trace = surrogate_descent(x, y, 3, 50, 1.0, lambda w: balanced_error(w, x, y, 3))
    assert trace.evaluations == list(range(51))
    assert trace.errors[-1] < 0.1 < trace.errors[0]


def test_closed_form_gradient_equals_autograd_of_the_plain_cross_entropy():
    from kitlib.sampling_search import cross_entropy_gradient

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=generator)
    theta = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    assert torch.allclose(weighted_cross_entropy_gradient(theta, x, y), cross_entropy_gradient(theta, x, y))
