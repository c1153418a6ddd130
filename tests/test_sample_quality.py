"""kitlib.sample_quality (claim W12 of the wgan chapter): the Fréchet distance against closed forms and
scipy's matrix square root, k-NN precision/recall against a loop, the digit classifier's accuracy."""

import numpy as np
import pytest
import scipy.linalg
from sklearn.datasets import load_digits

from kitlib.sample_quality import frechet_distance, knn_precision_recall, train_digit_classifier


def test_frechet_distance_in_one_dimension_is_the_w2_of_normals():
    """For 1-D Gaussians FD = (μ_a − μ_b)² + (σ_a − σ_b)², with the sample moments."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (400, 1)), rng.normal(-0.5, 0.5, (300, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_and_is_zero_on_itself():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5)) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # a plausible slip: tr(Σ_a + Σ_b − 2 Σ_a^{1/2} Σ_b^{1/2}) computed entrywise (√ of the entries)
    assert abs(np.trace(cov_a + cov_b - 2 * np.sqrt(np.abs(cov_a * cov_b))) + ((a.mean(0) - b.mean(0)) ** 2).sum()
               - expected) > 1e-3


def test_knn_precision_recall_against_a_loop():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(40, 3)), rng.normal(0.8, 1.0, size=(30, 3))
    k = 3

    def radius(points, i):
        return sorted(np.linalg.norm(points - points[i], axis=1))[k]

    precision = np.mean([any(np.linalg.norm(f - real[i]) <= radius(real, i) for i in range(40)) for f in fake])
    recall = np.mean([any(np.linalg.norm(r - fake[j]) <= radius(fake, j) for j in range(30)) for r in real])
    assert knn_precision_recall(real, fake, k) == pytest.approx((precision, recall))
    assert knn_precision_recall(real, real, k) == (1.0, 1.0)
    p, r = knn_precision_recall(real, np.repeat(real[:1], 30, axis=0), k)   # a collapsed generator
    assert p == 1.0 and r < 0.2


def test_digit_classifier_features():
    digits = load_digits()
    x, y = digits.data / 16, digits.target
    model = train_digit_classifier(x[:1200], y[:1200], epochs=20, seed=0)
    import torch
    accuracy = (model(torch.tensor(x[1200:], dtype=torch.float32)).argmax(1).numpy() == y[1200:]).mean()
    assert accuracy > 0.9
    assert model.features(x[:7]).shape == (7, 32)
