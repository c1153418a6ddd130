"""How good a set of generated images is, measured against real held-out images in the feature space of a small
classifier: the ``wgan`` chapter's stand-in for FID (claim W12; Inception weights cannot be downloaded here).

- :func:`frechet_distance` fits a Gaussian to each feature set and returns the Fréchet (2-Wasserstein) distance
  between them (Heusel et al. 2017; FID is this with Inception-v3 pool features):

      FD(a, b) = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}).

- :func:`knn_precision_recall` (Kynkäänniemi et al. 2019): each set's support is the union of balls around its
  points, of radius the distance to the point's k-th nearest neighbour in its own set; precision is the share of
  generated points inside the real support, recall the share of real points inside the generated support.
- :func:`train_digit_classifier` trains the feature extractor: an MLP 64 → 128 → ``feature_dim`` → 10 on
  labelled 8×8 digits; its features are the ReLU activations of the ``feature_dim`` layer.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import cdist
from torch import nn

from .gan_networks import mlp
from .train import fit


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to the rows of ``a`` (n, d) and ``b`` (m, d) (unbiased covariances). The
    trace of the matrix square root is Σ √λ of the eigenvalues of Σ_a^{1/2} Σ_b Σ_a^{1/2} (symmetric, ≥ 0),
    so no non-symmetric ``sqrtm`` is needed."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``fake`` (m, d) against ``real`` (n, d) with k-nearest-neighbour balls
    (Kynkäänniemi et al. 2019): precision = share of fake points within the k-NN radius of some real point,
    recall = share of real points within the k-NN radius of some fake point (radii in the point's own set,
    itself excluded)."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)

    def radii(points):
        distances = cdist(points, points)
        return np.sort(distances, axis=1)[:, k]   # column 0 is the point itself

    cross = cdist(real, fake)   # (n, m)
    precision = float(np.mean((cross <= radii(real)[:, None]).any(axis=0)))
    recall = float(np.mean((cross <= radii(fake)[None, :]).any(axis=1)))
    return precision, recall


class DigitFeatures(nn.Module):
    """An MLP classifier 64 → 128 → feature_dim → 10 (ReLU); :meth:`features` returns the ReLU activations of
    the feature_dim layer, shape (n, feature_dim), for images given as rows of 64 pixels in [0, 1]."""

    def __init__(self, feature_dim: int = 32):
        super().__init__()
        self.body = nn.Sequential(mlp([64, 128, feature_dim]), nn.ReLU())
        self.head = nn.Linear(feature_dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def features(self, images) -> np.ndarray:
        with torch.no_grad():
            return self.body(torch.as_tensor(np.asarray(images), dtype=torch.float32)).numpy()


def train_digit_classifier(images: np.ndarray, labels: np.ndarray, *, epochs: int = 60, batch: int = 64,
                           lr: float = 2e-3, feature_dim: int = 32, seed: int = 0) -> DigitFeatures:
    """Train :class:`DigitFeatures` with Adam and cross-entropy on (images (n, 64), labels (n,)) through
    :func:`kitlib.train.fit`; the feature extractor of claim W12 (its accuracy on held-out digits is printed in
    the chapter)."""
    torch.manual_seed(seed)
    model = DigitFeatures(feature_dim)
    x, y = torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long)
    shuffle = torch.Generator().manual_seed(seed)

    def batches(epoch):
        order = torch.randperm(len(x), generator=shuffle)
        for start in range(0, len(x), batch):
            pick = order[start:start + batch]
            yield x[pick], y[pick]

    fit(model, torch.optim.Adam(model.parameters(), lr=lr),
        lambda model, pair: nn.functional.cross_entropy(model(pair[0]), pair[1]), batches, epochs,
        progress=False, desc="digit classifier")
    return model.eval()
