"""kitlib.wgan: penalties against finite differences and closed forms, the Weiszfeld median, toy data."""

import numpy as np
import pytest
import torch
from torch import nn

from kitlib.wgan import (
    critic_estimate,
    gradient_penalty,
    input_gradient_norms,
    mean_distance,
    mlp,
    pixel_sharpness,
    toy_2d,
    train_particles,
    weiszfeld_median,
)


def test_input_gradient_norm_matches_finite_differences():
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
        assert float(norms[i]) == pytest.approx(float(grad.norm()), abs=1e-4)


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


def test_lp_penalty_is_zero_for_a_contraction_and_trains():
    torch.manual_seed(2)
    critic = mlp([2, 32, 1], activation=nn.Tanh)
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(0.1)   # a small network: ‖∇D‖ ≪ 1 everywhere
    gen = torch.Generator().manual_seed(2)
    real, fake = torch.randn(16, 2, generator=gen), torch.randn(16, 2, generator=gen)
    penalty = gradient_penalty(critic, real, fake, gen, one_sided=True)
    assert float(penalty.detach()) == 0.0
    two_sided = gradient_penalty(critic, real, fake, gen)
    two_sided.backward()   # the penalty is differentiable in the critic's weights (double backward)
    weights = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


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


def test_pixel_sharpness_and_particles():
    assert pixel_sharpness(np.array([0.0, 1.0, 1.0, 0.0])) == 1.0
    assert pixel_sharpness(np.full(10, 0.5)) == 0.0
    gen = torch.Generator().manual_seed(5)
    data = torch.rand(200, 4, generator=gen)
    start = data[:8].clone()
    points, trace = train_particles(data, start, steps=60, lr=0.02, generator=gen, progress=False)
    assert points.shape == (8, 4) and len(trace) == 60
    assert np.mean(trace[-15:]) < np.mean(trace[:15])


def test_static_ctransform_critic_approaches_w1_from_below():
    from kitlib.ot import exact_w1
    from kitlib.wgan import train_static_critic

    gen = torch.Generator().manual_seed(6)
    real = torch.randn(128, 2, generator=gen)
    fake = torch.randn(128, 2, generator=gen) + torch.tensor([2.0, 0.0])
    w1 = exact_w1(real.double().numpy(), fake.double().numpy())
    torch.manual_seed(6)
    critic = mlp([2, 32, 32, 1])
    history = train_static_critic("ctransform", critic, real, fake, steps=300, batch=64, lr=1e-3,
                                  generator=gen, eval_every=100, progress=False)
    assert history["step"] == [100, 200, 300]
    assert 0.9 * w1 < history["estimate"][-1] <= w1 + 1e-5   # full-set dual value: weak duality
    with pytest.raises(ValueError, match="unknown method"):
        train_static_critic("clip", critic, real, fake, steps=1, batch=8, lr=1e-3, generator=gen)


def test_dcgan_digits_shapes_and_gradient_penalty():
    from kitlib.wgan import dcgan_digits

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
    from kitlib.wgan import dcgan_mnist, train_wgan

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
        train_wgan("gp", lambda n: data[:n], noise_dim=16, data_dim=100, width=4, iterations=1, batch=8,
                   generator=gen, networks="dcgan")
