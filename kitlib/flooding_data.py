"""The flooding paper's synthetic sets with the official code's sizes and noise (takashiishida/flooding,
``synthetic/*.py`` and ``MLproject``), chapter ``flooding``, full profile.

- Sinusoid2d: 100 training and 100 validation points in all (``Sinusoid2dimDataNumpy``, ``-ts``/``-vs``
  are totals), 20000 test points;
- Two Gaussians: ``-ts 100``/``-vs 100`` points *per class* (200 each), 10000 test points per class,
  d = 10, positive class N(0, I), negative class N(1·𝟙, I) (``GaussianDataNumpy``, ``-ngm 1``);
- Spiral: 100 / 100 per class, 10000 test points per class, arms a(cos a, sin a) and (a + π)(cos a, sin a)
  on a ∈ [0, 4π] with input noise ``noise_level`` (MLproject default 0: the points lie on the arms;
  ``demo_synth.py``'s own argparse default is 1).

Label noise flips ⌊n·η⌋ labels of each of train, validation and test (the clean labels are kept beside).
"""

from __future__ import annotations

import numpy as np
import torch

from .data import Split, flip_labels, sinusoid2d, spiral, two_gaussians

#: (train, validation, test) sizes in all, as the official code draws them
OFFICIAL_SIZES = {"sinusoid2d": (100, 100, 20000), "two_gaussians": (200, 200, 20000), "spiral": (200, 200, 20000)}


def official_synthetic_split(name: str, rng: np.random.Generator, label_noise: float = 0.1,
                             n_test: int | None = None, spiral_noise: float = 0.0) -> Split:
    """One synthetic set at the official sizes (``n_test`` overrides the test size, e.g. for smoke runs)."""
    if name not in OFFICIAL_SIZES:
        raise ValueError(f"unknown synthetic set {name!r}; choose one of {', '.join(OFFICIAL_SIZES)}")
    generate = {"sinusoid2d": sinusoid2d, "two_gaussians": two_gaussians,
                "spiral": lambda n, r: spiral(n, r, noise_level=spiral_noise)}[name]
    sizes = list(OFFICIAL_SIZES[name])
    if n_test is not None:
        sizes[2] = n_test
    parts = []
    for n in sizes:
        x, y = generate(n, rng)
        parts += [torch.from_numpy(x), torch.from_numpy(flip_labels(y, label_noise, 2, rng)), torch.from_numpy(y)]
    return Split(*parts, num_classes=2)
