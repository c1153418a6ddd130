"""The 2-D toy distributions of the WGAN-GP code (Gulrajani et al. 2017, ``gan_toy.py``), chapter ``wgan``."""

from __future__ import annotations

import math

import torch

TOY_SETS: tuple[str, ...] = ("8gaussians", "25gaussians", "swissroll")


def toy_2d(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples, shape (n, 2), float32, of one of the WGAN-GP toy sets:

    - "8gaussians": centres 2·(cos 2πk/8, sin 2πk/8), k = 0..7, σ = 0.02, everything divided by 1.414;
    - "25gaussians": a 5×5 grid of spacing 2 centred at 0, σ = 0.05, divided by 2.828;
    - "swissroll": scikit-learn's roll, coordinates (x, z), noise 0.25, divided by 7.5.

    Used by §3 of the ``wgan`` chapter (the WGANs trained on 2-D data)."""
    if name == "8gaussians":
        angles = torch.arange(8) * (2 * math.pi / 8)
        centres = 2 * torch.stack([angles.cos(), angles.sin()], 1)
        pick = torch.randint(0, 8, (n,), generator=generator)
        return (centres[pick] + 0.02 * torch.randn(n, 2, generator=generator)) / 1.414
    if name == "25gaussians":
        grid = torch.arange(-2, 3, dtype=torch.float32) * 2
        centres = torch.cartesian_prod(grid, grid)
        pick = torch.randint(0, 25, (n,), generator=generator)
        return (centres[pick] + 0.05 * torch.randn(n, 2, generator=generator)) / 2.828
    if name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        points, _ = make_swiss_roll(n, noise=0.25, random_state=seed)
        return torch.tensor(points[:, [0, 2]] / 7.5, dtype=torch.float32)
    raise ValueError(f"unknown toy distribution {name!r}; choose {', '.join(TOY_SETS)}")
