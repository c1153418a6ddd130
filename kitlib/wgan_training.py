"""Training loops of the ``wgan`` chapter: a critic between two fixed sets, WGANs, and free particles that
descend the exact minibatch W1 (kexue.fm/archives/8244).

The static critic and the particles use the shared loop :func:`kitlib.train.fit`. :func:`train_wgan` keeps
its own loop: a WGAN alternates ``critic_steps`` critic updates with one generator update, with two models and
two optimisers, which ``fit`` (one model, one optimiser) does not do.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from .critic_losses import check_method, batch_cost, critic_estimate, critic_loss, zero_critic_estimate
from .gan_networks import gan_networks
from .ot import c_transform, exact_w1
from .train import fit, progress_bar


def wgan_adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam with the WGAN-GP betas (0.5, 0.9); torch's fused kernel (CPU and CUDA), which on small networks
    takes a third of the time of the default one."""
    return torch.optim.Adam(parameters, lr=lr, betas=(0.5, 0.9), fused=True)


def critic_step(method: str, critic: nn.Module, optimiser, real, fake, generator, penalty_weight: float) -> None:
    """One optimiser step on the WGAN-GP ("gp") or c-transform ("ctransform") critic loss of a batch pair."""
    loss = critic_loss(method, critic, real, fake, generator, penalty_weight)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def train_static_critic(method: str, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, steps: int,
                        batch: int, lr: float, generator: torch.Generator, eval_every: int = 250,
                        penalty_weight: float = 10.0, progress: bool = True) -> dict:
    """Train a critic between two fixed sets (rows of ``real`` and ``fake``) with Adam (β = 0.5, 0.9) on
    minibatches of ``batch`` rows from each, through :func:`kitlib.train.fit`; before training and every
    ``eval_every`` steps record :func:`critic_estimate` on the full sets. Returns {"step": [0, ...],
    "estimate": [...]}. §2 of the ``wgan`` chapter (claim W4)."""
    check_method(method)
    optimiser = wgan_adam(critic.parameters(), lr)
    rounds = math.ceil(steps / eval_every)

    def batches(round_):
        for _ in range(min(eval_every, steps - (round_ - 1) * eval_every)):
            pick_real = torch.randint(0, len(real), (batch,), generator=generator).to(real.device)
            pick_fake = torch.randint(0, len(fake), (batch,), generator=generator).to(fake.device)
            yield real[pick_real], fake[pick_fake]

    history = fit(critic, optimiser,
                  lambda model, pair: critic_loss(method, model, *pair, generator, penalty_weight), batches,
                  rounds, evaluate=lambda model: {"estimate": critic_estimate(method, model, real, fake)},
                  progress=progress, desc=f"{method} critic")
    done = [min(r * eval_every, steps) for r in history.evals["epoch"]]
    return {"step": done, "estimate": [float(v) for v in history.evals["estimate"]]}


def train_wgan(method: str, sample_real, *, noise_dim: int, data_dim: int, width: int, iterations: int,
               batch: int, critic_steps: int = 5, lr: float = 1e-4, penalty_weight: float = 10.0,
               generator: torch.Generator, device="cpu", track_every: int = 100, progress: bool = True,
               networks: str = "mlp", on_iteration=None):
    """A WGAN, G and D from :func:`kitlib.gan_networks.gan_networks`, Adam(lr, β = (0.5, 0.9)) for both and
    ``critic_steps`` critic updates per generator update (the WGAN-GP settings). ``method``: "gp" (the
    generator maximises E D(G(z))), "ctransform" (it minimises mean φ^c(G(z)) over the real batch) or "ns-gp"
    (a non-saturating GAN with the same penalty: it minimises E softplus(−D(G(z))), D a logit), or "ns" (the
    same without the penalty).

    ``sample_real(n)`` returns n real points, shape (n, data_dim). Every ``track_every`` iterations, on one fresh
    (real, fake) batch pair, the history records the critic's estimate, the zero critic's c-transform estimate
    and the exact W1. ``on_iteration(it, G)``, if given, is called after every generator update (it = 1, 2, ...;
    the chapter takes its FD snapshots there). Returns (G, D, history). §3 of the ``wgan`` chapter.

    Its own loop, not :func:`kitlib.train.fit`: critic and generator steps alternate, two models, two
    optimisers."""
    check_method(method)
    gen_net, critic = gan_networks(networks, noise_dim=noise_dim, data_dim=data_dim, width=width)
    gen_net, critic = gen_net.to(device), critic.to(device)
    opt_g, opt_d = wgan_adam(gen_net.parameters(), lr), wgan_adam(critic.parameters(), lr)
    noise = lambda n: torch.randn(n, noise_dim, generator=generator).to(device)  # noqa: E731
    history = {"iteration": [], "estimate": [], "zero critic": [], "exact": []}
    for it in progress_bar(range(1, iterations + 1), f"WGAN ({method})", progress):
        for _ in range(critic_steps):
            real, fake = sample_real(batch).to(device), gen_net(noise(batch)).detach()
            critic_step(method, critic, opt_d, real, fake, generator, penalty_weight)
        real, fake = sample_real(batch).to(device), gen_net(noise(batch))
        if method == "gp":
            loss_g = -critic(fake).mean()
        elif method in ("ns-gp", "ns"):
            loss_g = nn.functional.softplus(-critic(fake)).mean()
        else:
            with torch.no_grad():
                potential = critic(real).squeeze(-1)
            loss_g = c_transform(potential, batch_cost(real, fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if on_iteration is not None:
            on_iteration(it, gen_net)
        if it % track_every == 0 or it == iterations:
            real, fake = sample_real(batch).to(device), gen_net(noise(batch)).detach()
            history["iteration"].append(it)
            history["estimate"].append(critic_estimate(method, critic, real, fake))
            history["zero critic"].append(zero_critic_estimate(real, fake))
            history["exact"].append(float(exact_w1(real.cpu().double().numpy(), fake.cpu().double().numpy())))
    return gen_net, critic, history


def end_of_training_ratios(method: str, gen_net: nn.Module, critic: nn.Module, sample_real, *, noise_dim: int,
                           batch: int, generator: torch.Generator, draws: int = 10) -> dict[str, float]:
    """Over ``draws`` fresh (real, generated) batch pairs of ``batch`` points: the mean of the critic's
    estimate / exact W1 ("ratio") and of the zero critic's c-transform estimate / exact W1 ("zero critic",
    :func:`kitlib.critic_losses.zero_critic_estimate`), on the CPU. The end-of-training numbers of §3."""
    ratios, zeros = [], []
    gen_net, critic = gen_net.cpu(), critic.cpu()
    for _ in range(draws):
        real = sample_real(batch).cpu()
        with torch.no_grad():
            fake = gen_net(torch.randn(batch, noise_dim, generator=generator))
        exact = exact_w1(real.double().numpy(), fake.double().numpy())
        ratios.append(critic_estimate(method, critic, real, fake) / exact)
        zeros.append(zero_critic_estimate(real, fake) / exact)
    return {"ratio": float(np.mean(ratios)), "zero critic": float(np.mean(zeros))}


def ratios_on_shared_batches(critics: dict, gen_net: nn.Module, sample_real, *, noise_dim: int, batch: int,
                             generator: torch.Generator, draws: int = 20) -> dict[str, float]:
    """Several c-transform critics and the zero critic on the SAME ``draws`` fresh (real, generated) batch pairs:
    for each name in ``critics`` (name → critic module φ) the mean over the pairs of

        [mean_i φ(x_i) + mean_j φ^c(y_j)] / W1(batch pair),

    and under "zero critic" the same with φ ≡ 0. Sharing the pairs removes the draw-to-draw variation of the
    batch W1 from the differences between critics (claim W11). Evaluated on the CPU."""
    sums = dict.fromkeys([*critics, "zero critic"], 0.0)
    gen_net = gen_net.cpu()
    for _ in range(draws):
        real = sample_real(batch).cpu()
        with torch.no_grad():
            fake = gen_net(torch.randn(batch, noise_dim, generator=generator))
        exact = exact_w1(real.double().numpy(), fake.double().numpy())
        for name, critic in critics.items():
            sums[name] += critic_estimate("ctransform", critic.cpu(), real, fake) / exact
        sums["zero critic"] += zero_critic_estimate(real, fake) / exact
    return {name: total / draws for name, total in sums.items()}


def critic_on_frozen_generator(method: str, gen_net: nn.Module, critic: nn.Module, sample_real, *,
                               noise_dim: int, batch: int, checkpoints: tuple[int, ...], lr: float,
                               generator: torch.Generator, penalty_weight: float = 10.0,
                               fixed_pair_steps: int = 250, device="cpu", draws: int = 10) -> dict:
    """The frozen-generator control of claim W11: G stays fixed and the critic (with a fresh Adam(lr, β = 0.5,
    0.9)) takes further steps on fresh (real, generated) batch pairs; at each number of steps in ``checkpoints``
    :func:`end_of_training_ratios` (``draws`` fresh pairs) records its estimate / exact batch W1 and the zero
    critic's. Then a copy of the critic is fitted for ``fixed_pair_steps`` steps to ONE batch pair and its
    ratio on that pair is recorded, with the zero critic's on the same pair and the copy's ratio on fresh
    pairs. The critic is trained in place, on ``device``; evaluations run on the CPU. Returns {"steps",
    "ratio", "zero critic", "fixed pair", "fixed pair, zero critic", "fixed pair, fresh batches"}."""
    check_method(method)
    optimiser = wgan_adam(critic.to(device).parameters(), lr)
    noise = lambda n: torch.randn(n, noise_dim, generator=generator).to(device)  # noqa: E731
    out = {"steps": list(checkpoints), "ratio": [], "zero critic": []}
    done = 0
    for target in checkpoints:
        gen_net.to(device), critic.to(device)
        for _ in range(target - done):
            with torch.no_grad():
                fake = gen_net(noise(batch))
            critic_step(method, critic, optimiser, sample_real(batch).to(device), fake, generator, penalty_weight)
        done = target
        ratios = end_of_training_ratios(method, gen_net, critic, sample_real, noise_dim=noise_dim, batch=batch,
                                        generator=generator, draws=draws)
        out["ratio"].append(ratios["ratio"])
        out["zero critic"].append(ratios["zero critic"])
    fitted = copy.deepcopy(critic)
    optimiser = wgan_adam(fitted.parameters(), lr)
    real = sample_real(batch)
    with torch.no_grad():
        fake = gen_net(noise(batch).cpu())
    for _ in range(fixed_pair_steps):
        critic_step(method, fitted, optimiser, real, fake, generator, penalty_weight)
    exact = exact_w1(real.double().numpy(), fake.double().numpy())
    out["fixed pair"] = critic_estimate(method, fitted, real, fake) / exact
    out["fixed pair, zero critic"] = zero_critic_estimate(real, fake) / exact
    out["fixed pair, fresh batches"] = end_of_training_ratios(method, gen_net, fitted, sample_real,
                                                              noise_dim=noise_dim, batch=batch, generator=generator,
                                                              draws=draws)["ratio"]
    return out


class Particles(nn.Module):
    """m free points in data space, the parameters of a "generator" without a network: shape (m, d)."""

    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.points = nn.Parameter(start.detach().clone().double())


def train_particles(data: torch.Tensor, particles: torch.Tensor, *, steps: int, lr: float,
                    generator: torch.Generator, progress: bool = True) -> tuple[torch.Tensor, list[float]]:
    """Move m free points (``particles``, shape (m, d)) to minimise the exact W1 between them and a fresh batch
    of m rows of ``data`` at every step: Adam(lr) through :func:`kitlib.train.fit`, the gradient through the
    optimal plan (:func:`kitlib.ot.exact_w1`). The idealised generator of a minibatch WGAN whose critic is
    perfect (§4 of the ``wgan`` chapter, claim W7). Returns the final points and the per-step batch W1."""
    model = Particles(particles)
    data = data.double()
    m = len(model.points)

    def batches(step):
        yield data[torch.randint(0, len(data), (m,), generator=generator)]

    history = fit(model, torch.optim.Adam(model.parameters(), lr=lr),
                  lambda model, batch: exact_w1(model.points, batch), batches, steps, progress=progress,
                  desc="W1 particles")
    return model.points.detach(), [float(v) for v in history.steps["loss"]]
