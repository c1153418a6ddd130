"""The revised flooding chapter's measurements (issue 14) against independent computations: the sign-flip
rate (F11) on sequences with known answers, per-member weight decay against torch's ``weight_decay`` on
separate models, the two-step probe of Su's prediction (F6) against a separate model and autograd on its
flat parameters, the arms of the W/E/F comparison (F7, F10) and the official synthetic sizes."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from kitlib.autodiff import flat_parameters, grad_norm_sq_gradient
from kitlib.data import synthetic_split
from kitlib.flooding import (FloodGrid, add_member_weight_decay, arm_accuracies, flooded_loss, member_cross_entropy,
                             shuffled_sign_flip_rate, sign_flip_rate)
from kitlib.flooding_analysis import flooded_gradient_descent
from kitlib.flooding_data import official_synthetic_split
from kitlib.models import BatchedMLP, IshidaMLP
from kitlib.train import fit


def test_sign_flip_rate_on_sequences_with_known_answers():
    b = 0.3
    alternating = np.r_[1.0, 0.5, b + 0.01 * (-1) ** np.arange(1, 101)]      # crosses at index 2, then alternates
    assert sign_flip_rate(alternating, b) == pytest.approx(1.0)
    runs_of_two = np.r_[1.0, b + 0.01 * np.tile([-1, -1, 1, 1], 50)]          # flips on every second pair
    assert sign_flip_rate(runs_of_two, b) == pytest.approx(99 / 199, abs=1e-9)
    assert np.isnan(sign_flip_rate(np.linspace(1, 0.5, 10), b))                # never crosses
    rng = np.random.default_rng(0)
    # shuffling keeps the ascent fraction p = ½ and destroys the order: 2p(1 − p) = ½
    assert shuffled_sign_flip_rate(alternating, b, rng, repeats=200) == pytest.approx(0.5, abs=0.02)


def test_member_weight_decay_equals_torch_weight_decay_on_separate_models():
    torch.manual_seed(0)
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    decays = (0.0, 0.3)
    singles = [IshidaMLP(2, 2, width=8, depth=2) for _ in decays]
    batched = BatchedMLP(2, 2, 2, width=8, depth=2)
    for r, mlp in enumerate(singles):
        batched.load_member(r, mlp)
    add_member_weight_decay(batched, torch.tensor(decays))
    opt = torch.optim.SGD(batched.parameters(), lr=0.1, momentum=0.9)
    levels = torch.tensor([0.2, 0.2])
    for _ in range(5):
        loss = member_cross_entropy(batched(x.expand(2, -1, -1)), y.expand(2, -1))
        opt.zero_grad()
        flooded_loss(loss, levels).sum().backward()
        opt.step()
    for r, (mlp, lam) in enumerate(zip(singles, decays)):
        single_opt = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9, weight_decay=lam)
        for _ in range(5):
            single_opt.zero_grad()
            flooded_loss(F.cross_entropy(mlp(x), y), 0.2).backward()
            single_opt.step()
        first = [m for m in mlp if isinstance(m, torch.nn.Linear)][0]
        torch.testing.assert_close(batched.weights[0][r], first.weight.T, rtol=1e-5, atol=1e-6)
    # and the decay does act: the two members differ
    assert not torch.allclose(batched.weights[0][0], batched.weights[0][1])


def test_probe_ratio_equals_the_displacement_along_the_grad_norm_gradient_of_a_separate_model():
    """ρ = ⟨θ_{t+2} − θ_t, −u⟩ / ((ε²/2)‖u‖²), u = ∇‖∇L‖²(θ_t), recomputed on an IshidaMLP trained by fit."""
    torch.manual_seed(2)
    splits = [synthetic_split("sinusoid2d", np.random.default_rng(5), n_train=30, n_test=5)]
    mlps = [IshidaMLP(2, 2, width=8, depth=2, batch_norm=False) for _ in range(2)]
    mlps[1].load_state_dict(mlps[0].state_dict())
    batched = BatchedMLP(2, 2, 2, width=8, depth=2, batch_norm=False)
    for r, mlp in enumerate(mlps):
        batched.load_member(r, mlp)
    lr, level, probe_every = 0.5, 0.55, 4
    trace = flooded_gradient_descent(splits, (level, 0.0), width=8, depth=2, steps=15, lr=lr, model=batched,
                                     probe_every=probe_every, progress=False)
    assert trace.probe_steps.tolist() == [0, 4, 8, 12]
    x, y = splits[0].x_train.double(), splits[0].y_train
    mlp = mlps[0].double()
    cross_entropy = lambda m, batch: F.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
    step = lambda k: fit(mlp, torch.optim.SGD(mlp.parameters(), lr=lr), cross_entropy,  # noqa: E731
                         lambda e: [(x, y)], k, objective=lambda L: flooded_loss(L, level), progress=False)
    for k, t in enumerate(trace.probe_steps):
        if k:
            step(probe_every - 2)
        theta, unflatten = flat_parameters(mlp)
        loss_of = lambda v: F.cross_entropy(torch.func.functional_call(mlp, unflatten(v), (x,)), y)  # noqa: E731
        u = grad_norm_sq_gradient(loss_of, theta)
        step(2)
        moved = flat_parameters(mlp)[0] - theta
        expected = (-(moved @ u) / (lr**2 / 2 * (u @ u))).item()
        assert trace.probe_ratio[k, 0, 0] == pytest.approx(expected, rel=2e-3, abs=1e-4)
        cosine = (-(moved @ u) / (moved.norm() * u.norm())).item()
        assert trace.probe_cosine[k, 0, 0] == pytest.approx(cosine, abs=1e-3)


def test_arm_accuracies_picks_each_arm_on_validation():
    # 2 seeds, levels: [b = 0, b = 0.1, b = 0.2, b = 0 with λ]; 3 evaluations
    val = np.zeros((3, 2, 4))
    test = np.arange(24, dtype=float).reshape(3, 2, 4)
    val[-1] = [[10, 50, 60, 40], [10, 70, 60, 40]]      # flooding: level 2 (seed 0), level 1 (seed 1)
    val[:, 0, 0] = [5, 30, 10]                           # early stopping: evaluation 1 for seed 0
    val[:, 1, 0] = [40, 20, 10]                          # evaluation 0 for seed 1
    grid = FloodGrid(np.array([0.0, 0.1, 0.2, 0.0]), np.zeros((1, 2, 4)), np.array([0, 1, 2]),
                     {"val_acc": val, "test_acc": test}, None, np.array([0, 0, 0, 0.1]))
    arms = arm_accuracies(grid, [1, 2], [3])
    assert arms["plain"].tolist() == [test[2, 0, 0], test[2, 1, 0]]
    assert arms["flooding"].tolist() == [test[2, 0, 2], test[2, 1, 1]]
    assert arms["early stopping"].tolist() == [test[1, 0, 0], test[0, 1, 0]]
    assert arms["weight decay"].tolist() == [test[2, 0, 3], test[2, 1, 3]]
    assert np.isnan(arm_accuracies(grid, [1, 2])["weight decay"]).all()


def test_official_synthetic_split_sizes_and_noise():
    gauss = official_synthetic_split("two_gaussians", np.random.default_rng(0), n_test=400)
    assert len(gauss.y_train) == len(gauss.y_val) == 200 and len(gauss.y_test) == 400
    assert gauss.x_train.shape[1] == 10 and gauss.y_train_clean.sum() == 100          # 100 per class
    assert (gauss.y_train != gauss.y_train_clean).sum() == 20                          # ⌊200 · 0.1⌋ flipped
    spiral = official_synthetic_split("spiral", np.random.default_rng(1), n_test=400)
    radius = spiral.x_train.double().norm(dim=1)
    angle = torch.linspace(0, 4 * np.pi, 100, dtype=torch.float64)
    torch.testing.assert_close(radius[:100], angle, rtol=1e-5, atol=1e-5)              # noise 0: on the arm
    torch.testing.assert_close(radius[100:], angle + np.pi, rtol=1e-5, atol=1e-5)
    sinusoid = official_synthetic_split("sinusoid2d", np.random.default_rng(2))
    twin = synthetic_split("sinusoid2d", np.random.default_rng(2))
    assert len(sinusoid.y_train) == 100 and len(sinusoid.y_test) == 20000
    torch.testing.assert_close(sinusoid.x_test, twin.x_test)                          # the quick chapter's data
    with pytest.raises(ValueError):
        official_synthetic_split("moons", np.random.default_rng(0))
