"""Exercises of the `wgan` chapter. The one-sided penalty is verified against
:func:`kitlib.critic_losses.gradient_penalty` (tested against central differences and closed forms in
tests/test_wgan.py), the share of the zero critic's shortfall against :func:`kitlib.ot.exact_w1` (tested against
the optimal assignment and the LP in tests/test_ot.py), :func:`kitlib.ot.c_transform_value` (tested against a
loop) and :func:`kitlib.critic_losses.zero_critic_estimate`; the geometric median against
:func:`kitlib.sample_metrics.weiszfeld_median` (tested against its first-order condition and the 1-D median) and
against the first-order condition computed here. All checks together take a few tens of
milliseconds: the chapter's quick run is near its time limit."""

from __future__ import annotations

import numpy as np
import ot
import torch
from torch import nn

from kitlib.critic_losses import batch_cost, gradient_penalty, input_gradient_norms, zero_critic_estimate
from kitlib.exercises import Exercise, WrongAnswer, as_array, as_number, expect_close, hidden_generator
from kitlib.ot import c_transform_value, exact_w1
from kitlib.sample_metrics import weiszfeld_median


class _HiddenCritic(nn.Module):
    """A float64 tanh MLP d → 16 → 16 → 1 whose weights come from ``generator`` (never the global RNG)."""

    def __init__(self, dim: int, generator: torch.Generator):
        super().__init__()
        sizes = [dim, 16, 16, 1]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(b, a, generator=generator, dtype=torch.float64) / a ** 0.5)
            for a, b in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter(0.1 * torch.randn(b, generator=generator, dtype=torch.float64)) for b in sizes[1:])

    def forward(self, x):
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w.T + b
            if k < len(self.weights) - 1:
                x = torch.tanh(x)
        return x


def _verify_lp(answer) -> None:
    label = "wgan-ex-lp"
    g = hidden_generator(label)
    # (points, dimension, where the median gradient norm at the interpolates is put): straddling 1, mostly
    # above 1, mostly below 1 (where the one-sided penalty is small but not zero)
    for n, dim, median_norm in ((32, 2, 1.0), (48, 8, 1.6), (40, 64, 0.8)):
        critic = _HiddenCritic(dim, g)
        real = torch.rand(n, dim, generator=g, dtype=torch.float64)
        fake = real.flip(0) + 0.5 * torch.randn(n, dim, generator=g, dtype=torch.float64)
        seed = int(torch.randint(2 ** 31 - 1, (), generator=g))
        a = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed)).double()   # as gradient_penalty draws
        norms = input_gradient_norms(critic, a * real + (1 - a) * fake).detach()
        with torch.no_grad():
            critic.weights[-1] *= median_norm / norms.median()
        want = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(seed), one_sided=True)
        got = answer(critic, real.clone(), fake.clone(), a.clone())
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise WrongAnswer("the answer should be one number (a 0-dimensional tensor): the mean penalty")
        what = f"the penalty of a hidden critic on {n} pairs in {dim} dimensions"
        expect_close(got.reshape(()), want, rtol=1e-9, atol=1e-12, what=what)
        if not got.requires_grad:
            raise WrongAnswer("the penalty does not depend differentiably on the critic's weights (it must, to "
                              "train the critic with it: the gradient norms need a graph of their own)")
        params = list(critic.parameters())
        got_grads = torch.autograd.grad(got.reshape(()), params, allow_unused=True)
        want_grads = torch.autograd.grad(want, params, allow_unused=True)   # the last bias leaves ∇_x D alone
        for p, gg, wg in zip(params, got_grads, want_grads):
            gg, wg = (torch.zeros_like(p) if t is None else t for t in (gg, wg))
            expect_close(gg, wg, rtol=1e-7, atol=1e-9 * float(wg.abs().max()) + 1e-12,
                         what=f"the gradient of {what} with respect to the critic's weights")


def _verify_share(answer) -> None:
    label = "wgan-ex-lr"
    g = hidden_generator(label)
    for n, dim, mix in ((8, 2, 0.0), (24, 2, 0.6), (32, 64, 0.3), (64, 2, 0.9), (40, 8, 0.0)):
        real = torch.randn(n, dim, generator=g, dtype=torch.float64)
        fake = 0.7 * torch.randn(n, dim, generator=g, dtype=torch.float64) + 0.5
        cost = batch_cost(real, fake)
        # a critic part way to an optimal Kantorovich potential u (the LP's dual): φ = mix·u + (1 − mix)·noise;
        # mix 0 gives a random critic, whose share is negative
        _, log = ot.emd(ot.unif(n), ot.unif(n), cost.numpy(), log=True)
        noise = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        potential = mix * torch.as_tensor(log["u"], dtype=torch.float64) + (1 - mix) * noise
        w1 = exact_w1(real.numpy(), fake.numpy())
        zero = zero_critic_estimate(real, fake)
        want = (float(c_transform_value(potential, cost)) - zero) / (w1 - zero)
        got = answer(potential.clone(), real.clone(), fake.clone())
        expect_close(as_number(got, "the share"), want, rtol=1e-8, atol=1e-10,
                     what=f"the share on a hidden pair of {n} points in {dim} dimensions")


def _verify_median(answer) -> None:
    g = hidden_generator("wgan-ex-m")
    # clouds where the mean, the coordinate-wise median and the geometric median all differ: a main cluster
    # and a far minority (outliers pull the mean, not the median)
    for n, dim in ((41, 2), (90, 16), (150, 64)):
        points = torch.rand(n, dim, generator=g, dtype=torch.float64)
        far = torch.rand(n, generator=g) < 0.2
        points[far] += 3 * torch.randn(dim, generator=g, dtype=torch.float64)
        points = points.numpy()
        got = as_array(answer(points.copy()), "the median")
        what = f"the geometric median of {n} hidden points in {dim} dimensions"
        if got.shape != (dim,):
            raise WrongAnswer(f"{what} should be one point of shape ({dim},), got shape {tuple(got.shape)}")
        units = got - points
        units = units / np.maximum(np.linalg.norm(units, axis=1, keepdims=True), 1e-300)
        # ∇ of the mean distance: zero at the minimum. Converged Weiszfeld reaches ~1e-12; 1e-9 sends a near-miss
        # (a general-purpose minimiser stopped early) to this message, and a point that passes lies within ~3e-9
        # of the median (the smallest Hessian eigenvalue on these clouds is above 0.3), inside the test below
        if np.linalg.norm(units.mean(axis=0)) > 1e-9:
            raise WrongAnswer(f"{what} is not a minimum of the mean distance: its gradient, the mean of the unit "
                              f"vectors towards the point, is not zero there (its norm is above 1e-9)")
        expect_close(got, weiszfeld_median(points), rtol=0.0, atol=1e-7, what=what)


EXERCISES = [
    Exercise(
        label="wgan-ex-lp", chapter="wgan", function="one_sided_penalty",
        asks="Write WGAN-LP's one-sided gradient penalty at given interpolation weights, trainable in the "
             "critic's weights (§1, W9).",
        expected="the mean over pairs of max(0, ‖∇D(x̂)‖ − 1)² at x̂ = a·real + (1 − a)·fake, with the gradient "
                 "taken with respect to the input point (one norm per point), as a 0-dimensional tensor built "
                 "with a graph (create_graph) so that it can be differentiated in the critic's weights",
        minutes=15, prerequisites="§1 (the gradient penalty, W9)",
        verify=_verify_lp),
    Exercise(
        label="wgan-ex-lr", chapter="wgan", function="shortfall_closed",
        asks="Write W5's statistic: the share of the zero critic's shortfall that a c-transform critic closes "
             "on one batch pair (§1, §3).",
        expected="(v − z) / (W1 − z), where v = mean_i φ(x_i) + mean_j min_i [‖x_i − y_j‖ − φ(x_i)] is the "
                 "c-transform dual value, z = mean_j min_i ‖x_i − y_j‖ the zero critic's value and W1 the exact "
                 "W1 between the two equal-size batches (the mean cost of an optimal one-to-one matching); it "
                 "is negative for a critic worse than the zero critic",
        minutes=20, prerequisites="§1 (c-transform, zero critic, exact W1), §3 (W5)", verify=_verify_share),
    Exercise(
        label="wgan-ex-m", chapter="wgan", function="geometric_median",
        asks="Write Weiszfeld's iteration for the geometric median, the minimiser of batch-size-1 W1 (§4, W8).",
        expected="the point y minimising the mean Euclidean distance to the rows (the geometric median, not the "
                 "mean and not the coordinate-wise median), found by iterating y ← Σ w_i x_i / Σ w_i with "
                 "w_i = 1/‖x_i − y‖ from the mean until the step is below about 1e-12, as a NumPy array (d,)",
        minutes=15, prerequisites="§4 (batch size 1, W8); `mean_distance`",
        verify=_verify_median),
]
