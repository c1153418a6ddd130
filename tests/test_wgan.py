"""The wgan chapter's modules: penalties against finite differences and closed forms (W9), the zero critic,
the training loops, the Weiszfeld median and the sample metrics, the toy data and the networks."""

import numpy as np
import pytest
import torch
from torch import nn

from kitlib.critic_losses import (
    central_difference_gradient_norms,
    critic_estimate,
    critic_loss,
    gp_critic_loss,
    gradient_penalty,
    input_gradient_norms,
    zero_critic_estimate,
)
from kitlib.gan_networks import dcgan_digits, dcgan_mnist, gan_networks, mlp
from kitlib.ot import c_transform_value, exact_w1
from kitlib.sample_metrics import (
    batch_w1_against_real,
    mean_distance,
    pixel_sharpness,
    spread,
    weiszfeld_median,
)
from kitlib.toy_distributions import toy_2d
from kitlib.wgan_training import (
    critic_on_frozen_generator,
    end_of_training_ratios,
    ratios_on_shared_batches,
    train_particles,
    train_static_critic,
    train_wgan,
)


def test_input_gradient_norm_matches_a_loop_of_finite_differences():
    torch.manual_seed(0)
    critic = mlp([3, 16, 16, 1], activation=nn.Tanh).double()
    points = torch.randn(5, 3, dtype=torch.float64)
    norms = input_gradient_norms(critic, points).detach()
    step = 1e-6
    for i in range(5):
        grad = torch.zeros(3, dtype=torch.float64)
        for k in range(3):
            shift = torch.zeros(3, dtype=torch.float64)
            shift[k] = step
            with torch.no_grad():
                grad[k] = (critic(points[i] + shift) - critic(points[i] - shift)).item() / (2 * step)
        assert float(norms[i]) == pytest.approx(float(grad.norm()), abs=1e-8)
    assert torch.allclose(central_difference_gradient_norms(critic, points), norms, atol=1e-8)


def test_w9_fails_for_a_per_batch_gradient_norm_and_a_two_sided_lp():
    """Claim W9 can fail: the norm of the whole batch's gradient (instead of one norm per point) misses the
    finite differences by far more than its tolerance, and a two-sided penalty is not 0 on a contraction."""
    torch.manual_seed(1)
    critic = mlp([64, 32, 32, 1], activation=nn.Tanh).double()
    points = torch.rand(10, 64, dtype=torch.float64)
    points.requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points)
    per_batch = grad.norm().expand(10)          # the plausible slip: one norm for the batch
    reference = central_difference_gradient_norms(critic, points.detach())
    assert float((per_batch - reference).abs().max()) > 1e-2
    assert float((input_gradient_norms(critic, points).detach() - reference).abs().max()) < 1e-6
    small = mlp([64, 32, 1], activation=nn.Tanh).double()
    with torch.no_grad():
        for p in small.parameters():
            p.mul_(0.05)
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.rand(64, 64, dtype=torch.float64), torch.rand(64, 64, dtype=torch.float64)
    assert float(gradient_penalty(small, real, fake, gen, one_sided=True).detach()) == 0.0
    assert float(gradient_penalty(small, real, fake, gen).detach()) > 0.5   # (‖∇D‖ − 1)² ≈ 1 when ‖∇D‖ ≈ 0


def test_penalties_on_a_linear_critic_have_closed_forms():
    """D(x) = ⟨w, x⟩ has ‖∇D‖ = ‖w‖ everywhere: GP = (‖w‖ − 1)², LP = max(0, ‖w‖ − 1)²."""
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    for scale in (0.5, 1.0, 2.5):
        critic = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            critic.weight.copy_(torch.tensor([[scale, 0.0, 0.0, 0.0]]))
        gp = float(gradient_penalty(critic, real, fake, gen).detach())
        lp = float(gradient_penalty(critic, real, fake, gen, one_sided=True).detach())
        assert gp == pytest.approx((scale - 1) ** 2, abs=1e-6)
        assert lp == pytest.approx(max(0.0, scale - 1) ** 2, abs=1e-6)


def test_penalty_is_differentiable_in_the_weights():
    torch.manual_seed(2)
    critic = mlp([2, 32, 1], activation=nn.Tanh)
    gen = torch.Generator().manual_seed(2)
    real, fake = torch.randn(16, 2, generator=gen), torch.randn(16, 2, generator=gen)
    gradient_penalty(critic, real, fake, gen).backward()   # double backward
    weights = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_zero_critic_estimate_is_the_mean_nearest_real_distance():
    gen = torch.Generator().manual_seed(3)
    real, fake = torch.randn(9, 3, generator=gen), torch.randn(6, 3, generator=gen)
    loop = np.mean([min(float((r - f).norm()) for r in real) for f in fake])
    assert zero_critic_estimate(real, fake) == pytest.approx(loop, rel=1e-6)
    cost = torch.cdist(real, fake)
    assert zero_critic_estimate(real, fake) == pytest.approx(float(c_transform_value(torch.zeros(9), cost)),
                                                             rel=1e-6)
    assert critic_estimate("ctransform", lambda x: torch.zeros(len(x), 1), real, fake) == pytest.approx(
        zero_critic_estimate(real, fake), rel=1e-6)
    assert zero_critic_estimate(real, fake) <= exact_w1(real.double().numpy(), fake.double().numpy()) + 1e-6


def test_weiszfeld_median_minimises_the_mean_distance():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(50, 3)) + np.array([5.0, 0, 0]) * (rng.random((50, 1)) < 0.2)
    median = weiszfeld_median(points)
    best = mean_distance(points, median)
    for _ in range(50):
        assert mean_distance(points, median + 1e-3 * rng.normal(size=3)) >= best - 1e-12
    # the gradient Σ (y − x_i)/‖y − x_i‖ vanishes at the median
    diffs = median - points
    assert np.linalg.norm((diffs / np.linalg.norm(diffs, axis=1, keepdims=True)).sum(0)) < 1e-6
    # collinear points: the median of 1-D data is the ordinary median
    line = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    assert weiszfeld_median(line)[0] == pytest.approx(2.0, abs=1e-6)


def test_toy_sets_and_estimates():
    gen = torch.Generator().manual_seed(4)
    eight = toy_2d("8gaussians", 4000, gen)
    radius = eight.norm(dim=1)
    assert radius.mean() == pytest.approx(2 / 1.414, abs=0.01)
    assert toy_2d("25gaussians", 100, gen).shape == (100, 2)
    assert toy_2d("swissroll", 100, gen).shape == (100, 2)
    with pytest.raises(ValueError, match="unknown toy"):
        toy_2d("moons", 10, gen)
    critic = nn.Linear(2, 1)
    assert critic_estimate("gp", critic, eight[:10], eight[:10]) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        critic_estimate("clip", critic, eight, eight)


def test_pixel_sharpness_spread_and_particles():
    assert pixel_sharpness(np.array([0.0, 1.0, 1.0, 0.0])) == 1.0
    assert pixel_sharpness(np.full(10, 0.5)) == 0.0
    assert spread(np.array([[-1.0, 0.0], [1.0, 0.0]])) == pytest.approx(1.0)
    assert spread(np.ones((5, 3))) == 0.0
    gen = torch.Generator().manual_seed(5)
    data = torch.rand(200, 4, generator=gen)
    start = data[:8].clone()
    points, trace = train_particles(data, start, steps=60, lr=0.02, generator=gen, progress=False)
    assert points.shape == (8, 4) and len(trace) == 60
    assert np.mean(trace[-15:]) < np.mean(trace[:15])


def test_batch_w1_against_real_matches_direct_computation():
    rng = np.random.default_rng(6)
    data = rng.random((30, 5))
    candidate = rng.random((6, 5))
    real_real, real_candidate = batch_w1_against_real(data, candidate, 4, np.random.default_rng(7))
    again = np.random.default_rng(7)
    for k in range(4):
        real = data[again.choice(30, 6, replace=False)]
        assert real_real[k] == pytest.approx(exact_w1(real, data[again.choice(30, 6, replace=False)]))
        assert real_candidate[k] == pytest.approx(exact_w1(real, candidate))
    # a candidate that is the whole data set: every real batch is a permutation of it, at W1 0
    whole = data[:6]
    _, zero = batch_w1_against_real(whole, whole, 3, rng)
    assert np.allclose(zero, 0)


def test_static_ctransform_critic_approaches_w1_from_below():
    gen = torch.Generator().manual_seed(6)
    real = torch.randn(128, 2, generator=gen)
    fake = torch.randn(128, 2, generator=gen) + torch.tensor([2.0, 0.0])
    w1 = exact_w1(real.double().numpy(), fake.double().numpy())
    torch.manual_seed(6)
    critic = mlp([2, 32, 32, 1])
    history = train_static_critic("ctransform", critic, real, fake, steps=250, batch=64, lr=1e-3,
                                  generator=gen, eval_every=100, progress=False)
    assert history["step"] == [0, 100, 200, 250]
    assert 0.9 * w1 < history["estimate"][-1] <= w1 + 1e-5   # full-set dual value: weak duality
    assert history["estimate"][-1] > zero_critic_estimate(real, fake)
    with pytest.raises(ValueError, match="unknown method"):
        train_static_critic("clip", critic, real, fake, steps=1, batch=8, lr=1e-3, generator=gen)


def test_wgan_end_of_training_ratios_obey_weak_duality():
    """The c-transform estimate and the zero critic's are dual values of the batch: both ≤ its exact W1."""
    gen = torch.Generator().manual_seed(9)
    sample = lambda n: toy_2d("8gaussians", n, gen)  # noqa: E731
    g_net, d_net, history = train_wgan("ctransform", sample, noise_dim=2, data_dim=2, width=16, iterations=5,
                                       batch=32, generator=gen, track_every=2, progress=False)
    assert history["iteration"] == [2, 4, 5]
    assert all(z <= e + 1e-6 for z, e in zip(history["zero critic"], history["exact"]))
    ratios = end_of_training_ratios("ctransform", g_net, d_net, sample, noise_dim=2, batch=32, generator=gen,
                                    draws=3)
    assert 0 < ratios["zero critic"] <= 1 + 1e-6 and ratios["ratio"] <= 1 + 1e-6


def test_dcgan_digits_shapes_and_gradient_penalty():
    torch.manual_seed(7)
    generator, critic = dcgan_digits(16, 8)
    images = generator(torch.randn(5, 16))
    images = images.detach()
    assert images.shape == (5, 64) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert critic(images).shape == (5, 1)
    gen = torch.Generator().manual_seed(7)
    penalty = gradient_penalty(critic, torch.rand(5, 64), images, gen)
    penalty.backward()   # double backward through the convolutions
    assert critic[1].weight.grad is not None


def test_dcgan_mnist_follows_the_wgan_gp_shapes_and_trains():
    torch.manual_seed(8)
    generator, critic = dcgan_mnist(16, 4)
    z = torch.randn(3, 16)
    sizes = []
    x = z
    for layer in generator:
        x = layer(x)
        if x.dim() == 4:
            sizes.append(tuple(x.shape[1:]))
    assert sizes[0] == (16, 4, 4) and (8, 7, 7) in sizes and (4, 14, 14) in sizes and sizes[-1] == (1, 28, 28)
    images = x.detach()
    assert images.shape == (3, 784) and 0 <= float(images.min()) and float(images.max()) <= 1
    penalty = gradient_penalty(critic, torch.rand(3, 784), images, torch.Generator().manual_seed(0))
    penalty.backward()
    assert critic[1].weight.grad is not None
    data = torch.rand(40, 784)
    gen = torch.Generator().manual_seed(0)
    _, _, history = train_wgan("ctransform", lambda n: data[torch.randint(0, 40, (n,), generator=gen)],
                               noise_dim=16, data_dim=784, width=4, iterations=2, batch=8, generator=gen,
                               networks="dcgan", track_every=1, progress=False)
    assert len(history["exact"]) == 2 and all(v > 0 for v in history["exact"])
    with pytest.raises(ValueError, match="28×28"):
        gan_networks("dcgan", noise_dim=16, data_dim=100, width=4)


class HalfSquaredNorm(nn.Module):
    """D(x) = ½‖x‖², whose gradient x has a norm that depends on where it is taken."""

    def forward(self, x):
        return 0.5 * x.pow(2).sum(dim=1, keepdim=True)


def test_gradient_penalty_is_taken_at_interpolates_not_at_real_samples():
    """WGAN-GP's penalty is E(‖∇D(x̂)‖ − 1)² at x̂ = a·real + (1 − a)·fake (a drawn as gradient_penalty draws
    it). For D = ½‖x‖² that is E(‖x̂‖ − 1)² in closed form; the labml slip, the penalty at real samples only,
    E(‖real‖ − 1)², misses it by far more than the float tolerance."""
    gen = torch.Generator().manual_seed(11)
    real, fake = torch.randn(32, 3, generator=gen, dtype=torch.float64), 3 + torch.randn(32, 3, generator=gen,
                                                                                        dtype=torch.float64)
    a = torch.rand(32, 1, generator=torch.Generator().manual_seed(12)).double()
    at_interpolates = float(((a * real + (1 - a) * fake).norm(dim=1) - 1).pow(2).mean())
    penalty = float(gradient_penalty(HalfSquaredNorm(), real, fake, torch.Generator().manual_seed(12)).detach())
    assert penalty == pytest.approx(at_interpolates, abs=1e-10)

    def penalty_at_real(critic, real, fake, generator):   # the plausible wrong implementation
        return (input_gradient_norms(critic, real) - 1).pow(2).mean()

    wrong = float(penalty_at_real(HalfSquaredNorm(), real, fake, None).detach())
    assert abs(wrong - at_interpolates) > 1.0


def test_one_sided_penalty_where_the_gradient_norm_straddles_one():
    """Claim W9's second half on a critic whose ‖∇D‖ lies on both sides of 1: the one-sided penalty equals
    mean max(0, ‖∇D‖ − 1)² from central differences at the same interpolates; the two-sided penalty (the slip
    of forgetting ``one_sided``) misses that value by far more than W9's 1e-8."""
    torch.manual_seed(13)
    critic = mlp([64, 32, 32, 1], activation=nn.Tanh).double()
    gen = torch.Generator().manual_seed(13)
    real, fake = torch.rand(64, 64, generator=gen, dtype=torch.float64), torch.rand(64, 64, generator=gen,
                                                                                    dtype=torch.float64)
    a = torch.rand(64, 1, generator=torch.Generator().manual_seed(14)).double()
    interpolates = a * real + (1 - a) * fake
    median = input_gradient_norms(critic, interpolates).median().detach()
    with torch.no_grad():
        critic[-1].weight /= median
    norms = central_difference_gradient_norms(critic, interpolates)
    assert float(norms.min()) < 1 < float(norms.max())
    expected = float((norms - 1).clamp(min=0).pow(2).mean())
    one_sided = float(gradient_penalty(critic, real, fake, torch.Generator().manual_seed(14), one_sided=True).detach())
    two_sided = float(gradient_penalty(critic, real, fake, torch.Generator().manual_seed(14)).detach())
    assert abs(one_sided - expected) < 1e-8
    assert abs(two_sided - expected) > 1e-6


def test_gp_critic_loss_on_a_linear_critic():
    """D(x) = ⟨w, x⟩ + b: the WGAN-GP critic loss is −⟨w, mean real − mean fake⟩ + λ(‖w‖ − 1)² in closed form,
    and no gradient reaches the generator's output (fake is detached)."""
    gen = torch.Generator().manual_seed(15)
    real = torch.randn(16, 4, generator=gen)
    fake = torch.randn(16, 4, generator=gen).requires_grad_(True)
    critic = nn.Linear(4, 1)
    w = critic.weight.detach()[0]
    for weight in (10.0, 0.1):
        loss = gp_critic_loss(critic, real, fake, gen, penalty_weight=weight)
        expected = -float(w @ (real.mean(0) - fake.detach().mean(0))) + weight * (float(w.norm()) - 1) ** 2
        assert float(loss.detach()) == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert fake.grad is None and critic.weight.grad is not None


def test_ns_gp_discriminator_loss_against_a_loop():
    """E_P softplus(−D) + E_Q softplus(D) + λ GP = −mean log σ(D(real)) − mean log(1 − σ(D(fake))) + λ(‖w‖ − 1)²
    for a linear D, written out point by point; "ns" drops the penalty."""
    gen = torch.Generator().manual_seed(16)
    real, fake = torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)
    critic = nn.Linear(3, 1)
    sigmoid = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    with torch.no_grad():
        d_real, d_fake = critic(real)[:, 0].numpy(), critic(fake)[:, 0].numpy()
    cross_entropy = (-np.mean([np.log(sigmoid(t)) for t in d_real])
                     - np.mean([np.log(1 - sigmoid(t)) for t in d_fake]))
    penalty = (float(critic.weight.detach().norm()) - 1) ** 2
    assert float(critic_loss("ns-gp", critic, real, fake, gen).detach()) == pytest.approx(cross_entropy + 10 * penalty,
                                                                                 abs=1e-5)
    assert float(critic_loss("ns", critic, real, fake, gen).detach()) == pytest.approx(cross_entropy, abs=1e-5)
    with pytest.raises(ValueError, match="unknown method"):
        critic_loss("lsgan", critic, real, fake, gen)


def test_ns_gan_trains_and_its_generator_loss_is_non_saturating():
    gen = torch.Generator().manual_seed(17)
    sample = lambda n: toy_2d("8gaussians", n, gen)  # noqa: E731
    for method in ("ns-gp", "ns"):
        _, _, history = train_wgan(method, sample, noise_dim=2, data_dim=2, width=16, iterations=3, batch=16,
                                   generator=gen, track_every=3, progress=False)
        assert len(history["exact"]) == 1 and history["exact"][0] > 0


def test_frozen_generator_control_keeps_the_generator_and_fits_one_pair():
    gen = torch.Generator().manual_seed(18)
    sample = lambda n: toy_2d("8gaussians", n, gen)  # noqa: E731
    g_net, d_net, _ = train_wgan("ctransform", sample, noise_dim=2, data_dim=2, width=16, iterations=3, batch=32,
                                 generator=gen, track_every=3, progress=False)
    before = [p.detach().clone() for p in g_net.parameters()]
    out = critic_on_frozen_generator("ctransform", g_net, d_net, sample, noise_dim=2, batch=32, checkpoints=(5, 10),
                                     lr=1e-3, generator=gen, fixed_pair_steps=200)
    assert all(torch.equal(a, b) for a, b in zip(before, g_net.parameters()))
    assert out["steps"] == [5, 10] and len(out["ratio"]) == 2
    assert all(r <= 1 + 1e-6 for r in out["ratio"] + [out["fixed pair"]])   # weak duality on every batch
    assert out["fixed pair"] > out["fixed pair, zero critic"]


def test_ratios_on_shared_batches_against_a_loop_over_the_same_draws():
    """Each critic's mean (c-transform value / exact W1) and the zero critic's, on the same batch pairs, recomputed
    pair by pair from the definitions: φ̄(x) + mean_j min_i [‖x_i − y_j‖ − φ(x_i)] over W1 by an assignment."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    torch.manual_seed(0)
    g_net = mlp([2, 8, 2])
    critics = {"a": mlp([2, 8, 1]), "b": mlp([2, 8, 1])}
    def sampler(seed):
        gen = torch.Generator().manual_seed(seed)
        return lambda n: toy_2d("8gaussians", n, gen)

    out = ratios_on_shared_batches(critics, g_net, sampler(3), noise_dim=2,
                                   batch=16, generator=torch.Generator().manual_seed(4), draws=3)
    draw, noise_gen = sampler(3), torch.Generator().manual_seed(4)
    sums = dict.fromkeys(["a", "b", "zero critic"], 0.0)
    for _ in range(3):
        x = draw(16).double().numpy()
        with torch.no_grad():
            y = g_net(torch.randn(16, 2, generator=noise_gen)).double().numpy()
        cost = cdist(x, y)
        rows, cols = linear_sum_assignment(cost)
        w1 = cost[rows, cols].mean()
        for name, critic in critics.items():
            with torch.no_grad():
                phi = critic(torch.tensor(x, dtype=torch.float32)).double().squeeze(-1).numpy()
            sums[name] += (phi.mean() + (cost - phi[:, None]).min(0).mean()) / w1
        sums["zero critic"] += cost.min(0).mean() / w1
    for name, total in sums.items():
        assert out[name] == pytest.approx(total / 3, rel=1e-5)
    # shared pairs: a critic that is the zero function scores exactly the zero critic's value
    zero_net = mlp([2, 1])
    nn.init.zeros_(zero_net[0].weight), nn.init.zeros_(zero_net[0].bias)
    again = ratios_on_shared_batches({"zero net": zero_net}, g_net, sampler(3),
                                     noise_dim=2, batch=16, generator=torch.Generator().manual_seed(4), draws=3)
    assert again["zero net"] == pytest.approx(again["zero critic"], abs=1e-6)


def test_train_wgan_calls_on_iteration_after_every_generator_update():
    gen = torch.Generator().manual_seed(5)
    sample = lambda n: toy_2d("8gaussians", n, gen)  # noqa: E731
    seen = []
    train_wgan("ctransform", sample, noise_dim=2, data_dim=2, width=8, iterations=4, batch=8, generator=gen,
               track_every=4, progress=False, on_iteration=lambda it, g: seen.append((it, isinstance(g, nn.Module))))
    assert seen == [(1, True), (2, True), (3, True), (4, True)]
