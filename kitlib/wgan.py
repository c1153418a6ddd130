"""WGAN critics and generators measured against exact W1 (kexue.fm/archives/8244), chapter ``wgan``.

WGAN: min_G max_{‖D‖_L ≤ 1} E_P[D(x)] − E_Q[D(G(z))], the Kantorovich–Rubinstein dual of W1(P, Q_G).
The Lipschitz constraint is imposed here in two ways (Stanczuk et al. 2021, after Mallasto et al. 2019):

- gradient penalty (WGAN-GP, Gulrajani et al. 2017): λ E_x̂ (‖∇D(x̂)‖ − 1)², x̂ = a x + (1 − a) x̃, a ~ U[0, 1]
  (the one-sided "LP" variant penalises only max(0, ‖∇D‖ − 1)²);
- the c-transform: replace D on the fake side by φ^c(y) = min_i [‖x_i − y‖ − φ(x_i)] over the real batch, so the
  pair (φ, φ^c) is feasible by construction and the batch value never exceeds the batch W1
  (:func:`kitlib.ot.c_transform_value`).

Also: the 2-D toy distributions of the WGAN-GP code, minibatch-W1 particles, and the Weiszfeld geometric median.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from .ot import c_transform, c_transform_value, exact_w1
from .train import progress_bar


def toy_2d(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """Samples of the WGAN-GP toy sets (``gan_toy.py``): "8gaussians" (centres on a circle of radius 2, σ 0.02,
    all divided by 1.414), "25gaussians" (a 5×5 grid of spacing 2, σ 0.05, divided by 2.828), "swissroll"
    (scikit-learn's roll, coordinates (x, z), noise 0.25, divided by 7.5)."""
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
    raise ValueError(f"unknown toy distribution {name!r}; choose 8gaussians, 25gaussians or swissroll")


def mlp(sizes: list[int], activation=nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
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
    D = Conv(4, stride 2) → w×4×4 → Conv → 2w×2×2 → Linear → 1, LeakyReLU(0.2), no normalisation (GP)."""
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
    normalisation (GP)."""
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


def input_gradient_norms(critic: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """‖∇_x D(x)‖ at each point, with a graph through it (so penalties built on it can be trained)."""
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    return grad.flatten(1).norm(dim=1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator,
                     one_sided: bool = False) -> torch.Tensor:
    """E (‖∇D(x̂)‖ − 1)² at x̂ = a·real + (1 − a)·fake, a ~ U[0, 1] per pair (WGAN-GP); with ``one_sided``
    E max(0, ‖∇D(x̂)‖ − 1)² (WGAN-LP, Petzka et al. 2018), zero wherever D is 1-Lipschitz."""
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    a = torch.rand(shape, generator=generator).to(real.device, real.dtype)
    norms = input_gradient_norms(critic, a * real + (1 - a) * fake.detach())
    excess = norms - 1
    if one_sided:
        excess = excess.clamp(min=0)
    return excess.pow(2).mean()


def gp_critic_loss(critic, real, fake, generator, penalty_weight: float = 10.0) -> torch.Tensor:
    """−(E D(real) − E D(fake)) + λ GP: what the WGAN-GP critic minimises."""
    gap = critic(real).mean() - critic(fake.detach()).mean()
    return -gap + penalty_weight * gradient_penalty(critic, real, fake, generator)


def batch_cost(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Euclidean cost ‖real_i − fake_j‖, shape (m, n), images flattened."""
    return torch.cdist(real.flatten(1), fake.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")


def ctransform_critic_loss(critic, real, fake) -> torch.Tensor:
    """−[mean φ(real) + mean φ^c(fake)], φ^c over the real batch: what the c-transform critic minimises."""
    return -c_transform_value(critic(real).squeeze(-1), batch_cost(real, fake.detach()))


def critic_estimate(method: str, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """The W1 estimate a critic reports on two sets: E_P D − E_Q D ("gp"), or the c-transform dual value
    mean φ(real) + mean φ^c(fake) with φ^c over all of ``real`` ("ctransform")."""
    with torch.no_grad():
        if method == "gp":
            return float(critic(real).mean() - critic(fake).mean())
        if method == "ctransform":
            return float(c_transform_value(critic(real).squeeze(-1), batch_cost(real, fake)))
    raise ValueError(f"unknown method {method!r}; choose 'gp' or 'ctransform'")


def critic_step(method: str, critic: nn.Module, optimiser, real, fake, generator, penalty_weight: float) -> None:
    """One optimiser step on the WGAN-GP ("gp") or c-transform ("ctransform") critic loss of a batch pair."""
    if method == "gp":
        loss = gp_critic_loss(critic, real, fake, generator, penalty_weight)
    elif method == "ctransform":
        loss = ctransform_critic_loss(critic, real, fake)
    else:
        raise ValueError(f"unknown method {method!r}; choose 'gp' or 'ctransform'")
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def train_static_critic(method: str, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, steps: int,
                        batch: int, lr: float, generator: torch.Generator, eval_every: int = 250,
                        penalty_weight: float = 10.0, progress: bool = True) -> dict:
    """Train a critic between two fixed sets with Adam (β = 0.5, 0.9) on minibatches; every ``eval_every`` steps
    record :func:`critic_estimate` on the full sets. Returns {"step": [...], "estimate": [...]}."""
    optimiser = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    history = {"step": [], "estimate": []}
    for step in progress_bar(range(1, steps + 1), f"{method} critic", progress):
        pick_real = torch.randint(0, len(real), (batch,), generator=generator).to(real.device)
        pick_fake = torch.randint(0, len(fake), (batch,), generator=generator).to(fake.device)
        critic_step(method, critic, optimiser, real[pick_real], fake[pick_fake], generator, penalty_weight)
        if step % eval_every == 0 or step == steps:
            history["step"].append(step)
            history["estimate"].append(critic_estimate(method, critic, real, fake))
    return history


def train_wgan(method: str, sample_real, *, noise_dim: int, data_dim: int, width: int, iterations: int,
               batch: int, critic_steps: int = 5, lr: float = 1e-4, penalty_weight: float = 10.0,
               generator: torch.Generator, device="cpu", track_every: int = 100, progress: bool = True,
               networks: str = "mlp"):
    """WGAN with 3-hidden-layer ReLU MLPs for G and D (``networks="dcgan"``: :func:`dcgan_digits` for 8×8
    images, :func:`dcgan_mnist` for 28×28), Adam(lr, β = (0.5, 0.9)) for both, ``critic_steps``
    critic updates per generator update (the WGAN-GP toy settings). ``method``: "gp" or "ctransform"; the
    c-transform generator minimises mean φ^c(G(z)) over the real batch.

    ``sample_real(n)`` returns n real points. Every ``track_every`` iterations the critic's estimate and the
    exact W1 of one fresh (real, fake) batch pair are recorded. Returns (G, D, history)."""
    if method not in ("gp", "ctransform"):
        raise ValueError(f"unknown method {method!r}; choose 'gp' or 'ctransform'")
    if networks == "mlp":
        gen_net = mlp([noise_dim, width, width, width, data_dim])
        critic = mlp([data_dim, width, width, width, 1])
    elif networks == "dcgan" and data_dim in (64, 784):
        gen_net, critic = (dcgan_digits if data_dim == 64 else dcgan_mnist)(noise_dim, width)
    else:
        raise ValueError(f"networks must be 'mlp' or 'dcgan' (8×8 or 28×28 images, data_dim 64 or 784); got "
                         f"{networks!r} with data_dim {data_dim}")
    gen_net, critic = gen_net.to(device), critic.to(device)
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    noise = lambda n: torch.randn(n, noise_dim, generator=generator).to(device)  # noqa: E731
    history = {"iteration": [], "estimate": [], "exact": []}
    for it in progress_bar(range(1, iterations + 1), f"WGAN ({method})", progress):
        for _ in range(critic_steps):
            real, fake = sample_real(batch).to(device), gen_net(noise(batch)).detach()
            critic_step(method, critic, opt_d, real, fake, generator, penalty_weight)
        real, fake = sample_real(batch).to(device), gen_net(noise(batch))
        if method == "gp":
            loss_g = -critic(fake).mean()
        else:
            with torch.no_grad():
                potential = critic(real).squeeze(-1)
            loss_g = c_transform(potential, batch_cost(real, fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if it % track_every == 0 or it == iterations:
            real, fake = sample_real(batch).to(device), gen_net(noise(batch)).detach()
            history["iteration"].append(it)
            history["estimate"].append(critic_estimate(method, critic, real, fake))
            history["exact"].append(float(exact_w1(real.cpu().double().numpy(), fake.cpu().double().numpy())))
    return gen_net, critic, history


def train_particles(data: torch.Tensor, particles: torch.Tensor, *, steps: int, lr: float,
                    generator: torch.Generator, progress: bool = True) -> tuple[torch.Tensor, list[float]]:
    """Move m free points to minimise the exact W1 between them and a fresh real batch of the same size at every
    step (Adam; gradient through the optimal plan). Returns the final points and the per-step batch W1."""
    points = particles.clone().double().requires_grad_(True)
    optimiser = torch.optim.Adam([points], lr=lr)
    data = data.double()
    trace = []
    for _ in progress_bar(range(steps), "W1 particles", progress):
        batch = data[torch.randint(0, len(data), (len(points),), generator=generator)]
        loss = exact_w1(points, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        trace.append(float(loss.detach()))
    return points.detach(), trace


def weiszfeld_median(points: np.ndarray, iterations: int = 2000, tol: float = 1e-12) -> np.ndarray:
    """The geometric median argmin_y Σ_i ‖x_i − y‖ by Weiszfeld's iteration y ← Σ w_i x_i / Σ w_i,
    w_i = 1/‖x_i − y‖ (starting from the mean; a point that coincides with y is nudged off by 1e-12)."""
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
    """E‖x − y‖ over the rows x of ``points``: the batch-size-1 W1 objective."""
    return float(np.linalg.norm(np.asarray(points) - np.asarray(y), axis=1).mean())


def pixel_sharpness(images) -> float:
    """mean |2x − 1| over pixels in [0, 1]: 1 for pure black/white images, 0 for uniform grey. Averages of
    images (blur) move pixels towards the middle and lower it."""
    values = np.asarray(images, dtype=np.float64)
    return float(np.abs(2 * np.clip(values, 0, 1) - 1).mean())
