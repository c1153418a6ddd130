"""Generators and critics of the ``wgan`` chapter: MLPs, and DCGAN-style convolutional networks for 8×8 digits
and for 28×28 MNIST (after the WGAN-GP code of Gulrajani et al. 2017, ``gan_mnist.py``)."""

from __future__ import annotations

from torch import nn
import torch

NETWORKS: tuple[str, ...] = ("mlp", "dcgan")


def mlp(sizes: list[int], activation=nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last): sizes
    [d_in, h_1, ..., d_out] map (n, d_in) → (n, d_out)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Unflatten8x8(nn.Module):
    """(n, 64) → (n, 1, 8, 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 1, 8, 8)


def dcgan_digits(noise_dim: int, width: int) -> tuple[nn.Sequential, nn.Sequential]:
    """DCGAN-style generator and critic for 8×8 images given as flat vectors of 64 pixels, shaped like the
    WGAN-GP MNIST code scaled to 8×8: G = Linear → 2w×2×2 → ConvT(4, stride 2) → w×4×4 → ConvT → 1×8×8 → sigmoid;
    D = Conv(4, stride 2) → w×4×4 → Conv → 2w×2×2 → Linear → 1, LeakyReLU(0.2), no normalisation (GP).
    G: (n, noise_dim) → (n, 64) in [0, 1]; D: (n, 64) → (n, 1). The full profile's digit WGANs."""
    generator = nn.Sequential(
        nn.Linear(noise_dim, 2 * width * 4), nn.ReLU(), nn.Unflatten(1, (2 * width, 2, 2)),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Sigmoid(), nn.Flatten(1),
    )
    critic = nn.Sequential(
        Unflatten8x8(),
        nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Flatten(1), nn.Linear(2 * width * 4, 1),
    )
    return generator, critic


class CropTo7(nn.Module):
    """(n, c, 8, 8) → (n, c, 7, 7), as the WGAN-GP MNIST generator crops after its first upsampling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :7, :7]


def dcgan_mnist(noise_dim: int, width: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The WGAN-GP MNIST networks (Gulrajani et al. 2017, ``gan_mnist.py``, DIM = ``width``) for flat 784-pixel
    images: G = Linear → 4w×4×4 → ConvT(5, stride 2) → 2w×8×8 → crop 7×7 → ConvT → w×14×14 → ConvT → 1×28×28
    → sigmoid; D = Conv(5, stride 2) → w×14×14 → 2w×7×7 → 4w×4×4 → Linear → 1, LeakyReLU(0.2), no
    normalisation (GP). G: (n, noise_dim) → (n, 784); D: (n, 784) → (n, 1)."""
    generator = nn.Sequential(
        nn.Linear(noise_dim, 4 * width * 16), nn.ReLU(), nn.Unflatten(1, (4 * width, 4, 4)),
        nn.ConvTranspose2d(4 * width, 2 * width, 5, stride=2, padding=2, output_padding=1), nn.ReLU(), CropTo7(),
        nn.ConvTranspose2d(2 * width, width, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(width, 1, 5, stride=2, padding=2, output_padding=1), nn.Sigmoid(), nn.Flatten(1),
    )
    critic = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
        nn.Flatten(1), nn.Linear(4 * width * 16, 1),
    )
    return generator, critic


def gan_networks(networks: str, *, noise_dim: int, data_dim: int, width: int) -> tuple[nn.Module, nn.Module]:
    """(G, D) for a WGAN: ``"mlp"`` gives MLPs with three hidden ReLU layers of ``width`` (the WGAN-GP toy
    networks), ``"dcgan"`` gives :func:`dcgan_digits` (data_dim 64) or :func:`dcgan_mnist` (data_dim 784)."""
    if networks == "mlp":
        return mlp([noise_dim, width, width, width, data_dim]), mlp([data_dim, width, width, width, 1])
    if networks == "dcgan" and data_dim in (64, 784):
        return (dcgan_digits if data_dim == 64 else dcgan_mnist)(noise_dim, width)
    raise ValueError(f"networks must be 'mlp' or 'dcgan' (8×8 or 28×28 images, data_dim 64 or 784); got "
                     f"{networks!r} with data_dim {data_dim}")
