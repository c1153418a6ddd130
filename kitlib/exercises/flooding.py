"""Exercises of the `flooding` chapter, each verified on hidden inputs against kitlib.flooding,
kitlib.flooding_analysis and kitlib.autodiff (tested in tests/test_flooding_arms.py and
tests/test_autodiff_flooding.py against known sequences, finite differences and explicit Hessians), or
against a closed form written here."""

from __future__ import annotations

import math

import numpy as np
import torch

from kitlib.autodiff import grad_norm_sq_gradient, gradient
from kitlib.exercises import Exercise, WrongAnswer, as_array, expect_close, hidden_generator
from kitlib.flooding import sign_flip_rate
from kitlib.flooding_analysis import gradient_penalty_weight, smooth_test_loss


def _loss_sequences(label: str):
    """Five hidden training-loss sequences (T,) float64 around a flood level b: a descent of 3–30 steps above b,
    then signs of L − b from a two-state chain that flips with probability p (strict alternation to long runs)."""
    g = hidden_generator(label)
    for steps, flip in ((60, 1.0), (120, 0.9), (200, 0.5), (333, 0.3), (150, 0.7)):
        b = float(0.1 + 0.9 * torch.rand((), generator=g))
        approach = int(torch.randint(3, 31, (), generator=g))
        above = b + torch.linspace(2.0, 0.05, approach, dtype=torch.float64) * b
        signs, below = [], True                            # the first step after the approach is below b
        for _ in range(steps - approach):
            signs.append(below)
            if float(torch.rand((), generator=g)) < flip:
                below = not below
        offsets = 0.001 + 0.05 * b * torch.rand(steps - approach, generator=g, dtype=torch.float64)
        flooded = torch.where(torch.tensor(signs), b - offsets, b + offsets)
        yield torch.cat([above, flooded]).numpy(), b


def _verify_sign_changes(answer) -> None:
    for losses, b in _loss_sequences("flooding-ex-adam"):
        got = answer(losses.copy(), b)
        value = as_array(got, "the rate")
        if value.shape not in ((), (1,)):
            raise WrongAnswer(f"the answer should be one number (a fraction), got shape {tuple(value.shape)}")
        expect_close(value.reshape(()), sign_flip_rate(losses, b), rtol=1e-9,
                     what=f"the sign-change rate of a hidden sequence of {len(losses)} losses")


def _penalty_problems(label: str):
    """Four hidden smooth losses of θ ∈ R^d (logistic + quartic, float64), a starting point and unequal steps."""
    g = hidden_generator(label)
    for dim in (3, 5, 8, 4):
        loss_fn = smooth_test_loss(dim=dim, n=30, seed=int(torch.randint(0, 10_000, (), generator=g)))
        theta = 0.6 * torch.randn(dim, generator=g, dtype=torch.float64)
        ascent = float(10 ** (-3 + 2 * torch.rand((), generator=g)))      # 1e-3 … 1e-1
        descent = ascent * float(1.2 + 2.0 * torch.rand((), generator=g))
        yield loss_fn, theta, descent, ascent


def _verify_penalty(answer) -> None:
    for loss_fn, theta, descent, ascent in _penalty_problems("flooding-ex-penalty"):
        lam = gradient_penalty_weight(descent, ascent)
        point = theta.clone().requires_grad_(True)
        got = answer(loss_fn, point, descent, ascent)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise WrongAnswer("the answer should be one number as a tensor (the penalised loss at θ)")
        what = f"the penalised loss of a hidden {len(theta)}-parameter problem"
        expect_close(got.detach().reshape(()), loss_fn(theta) + lam * (gradient(loss_fn, theta) ** 2).sum(),
                     rtol=1e-9, what=what)
        if not got.requires_grad:
            raise WrongAnswer("the penalised loss does not depend differentiably on θ (it must, to train with it)")
        (slope,) = torch.autograd.grad(got.reshape(()), point)
        expect_close(slope, gradient(loss_fn, theta) + lam * grad_norm_sq_gradient(loss_fn, theta), rtol=1e-8,
                     atol=1e-12, what=f"the gradient in θ of {what}")


def _noise_levels(label: str):
    g = hidden_generator(label)
    yield 0.0, 7
    for k in (2, 3, 10, 100):
        yield float(0.01 + 0.6 * torch.rand((), generator=g)), k


def _verify_noise_entropy(answer) -> None:
    for noise, k in _noise_levels("flooding-ex-noise"):
        q = np.r_[1 - noise, np.full(k - 1, noise / (k - 1))]     # the noisy label's distribution, clean label known
        want = -sum(p * math.log(p) for p in q if p > 0)
        got = answer(noise, k)
        value = as_array(got, "the entropy")
        if value.shape not in ((), (1,)):
            raise WrongAnswer(f"the answer should be one number, got shape {tuple(value.shape)}")
        case = "no noise" if noise == 0 else f"a hidden noise rate with K = {k} classes"
        expect_close(value.reshape(()), want, rtol=1e-9, atol=1e-12, what=f"the entropy for {case}")


EXERCISES = [
    Exercise(
        label="flooding-ex-adam", chapter="flooding", function="sign_change_rate",
        asks="Write the statistic behind F11: how often sign(L − b) changes between consecutive steps once the "
             "training loss has first gone below b.",
        expected="from the first step whose loss is strictly below b to the end, the number of consecutive pairs "
                 "of steps on opposite sides of b divided by the number of such pairs (1 for strict alternation), "
                 "as one number; steps before the first crossing do not count",
        minutes=15, prerequisites="section 3 (F5, F11); `sign_flip_rate`", verify=_verify_sign_changes),
    Exercise(
        label="flooding-ex-penalty", chapter="flooding", function="penalised_loss",
        asks="Write the objective L + λ‖∇L‖² that unequal descent and ascent steps ε₁ > ε₂ follow (F4), "
             "differentiable in θ.",
        expected="L(θ) + λ‖∇L(θ)‖² with λ = ε₁ε₂ / (2(ε₁ − ε₂)), as a 0-dimensional tensor whose gradient in θ is "
                 "∇L + 2λHg (the gradient of L kept in the graph, create_graph=True)",
        minutes=20, prerequisites="section 2 (F3, F4); `gradient_penalty_weight`, `grad_norm_sq_gradient`",
        verify=_verify_penalty),
    Exercise(
        label="flooding-ex-noise", chapter="flooding", function="noisy_label_entropy",
        asks="Write the noise entropy H that section 4 compares the chosen flood level with.",
        expected="the entropy (nats) of the noisy label when the clean label is known: probability 1 − η on it "
                 "and η/(K − 1) on each of the K − 1 others, so 0 without noise (0 log 0 = 0)",
        minutes=10, prerequisites="section 4 (F9, F10, the figure of b against H); `label_noise_entropy`",
        verify=_verify_noise_entropy),
]
