"""Exercises of the `flooding` chapter, each verified on hidden inputs against a count built into those inputs
(the sign changes of a loss sequence, the flipped labels a model reproduces) or against kitlib.flooding_analysis
and kitlib.autodiff (tested in tests/test_autodiff_flooding.py against finite differences and explicit
Hessians)."""

from __future__ import annotations

import torch

from kitlib.autodiff import grad_norm_sq_gradient, gradient
from kitlib.exercises import Exercise, WrongAnswer, as_number, expect_close, hidden_generator
from kitlib.flooding_analysis import gradient_penalty_weight, smooth_test_loss


def _loss_sequences(label: str):
    """Five hidden training-loss sequences (T,) float64 around a flood level b, each with its sign-change rate
    counted while it is built: a descent of 3–30 steps above b, then signs of L − b from a two-state chain that
    starts below b and flips with probability p (strict alternation to long runs); the rate is the number of
    flips between consecutive flooded steps over the number of those pairs."""
    g = hidden_generator(label)
    for steps, flip in ((60, 1.0), (120, 0.9), (200, 0.5), (333, 0.3), (150, 0.7)):
        b = float(0.1 + 0.9 * torch.rand((), generator=g))
        approach = int(torch.randint(3, 31, (), generator=g))
        above = b + torch.linspace(2.0, 0.05, approach, dtype=torch.float64) * b   # all strictly above b
        below, signs, flips = True, [True], 0              # the first step after the approach is below b
        for _ in range(steps - approach - 1):
            if float(torch.rand((), generator=g)) < flip:
                below, flips = not below, flips + 1
            signs.append(below)
        offsets = 0.001 + 0.05 * b * torch.rand(steps - approach, generator=g, dtype=torch.float64)
        flooded = torch.where(torch.tensor(signs), b - offsets, b + offsets)
        yield torch.cat([above, flooded]).numpy(), b, flips / (steps - approach - 1)


def _verify_sign_changes(answer) -> None:
    for losses, b, rate in _loss_sequences("flooding-ex-signs"):
        got = as_number(answer(losses.copy(), b), "the rate (a fraction)")
        expect_close(got, rate, rtol=1e-9, what=f"the sign-change rate of a hidden sequence of {len(losses)} losses")


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
        (slope,) = torch.autograd.grad(got.reshape(()), point, allow_unused=True)
        if slope is None:
            raise WrongAnswer("the penalised loss does not depend on the θ passed in (build it from `theta`, "
                              "not a copy)")
        expect_close(slope, gradient(loss_fn, theta) + lam * grad_norm_sq_gradient(loss_fn, theta), rtol=1e-8,
                     atol=1e-12, what=f"the gradient in θ of {what}")


def _noisy_predictions(label: str):
    """Five hidden training sets of N points and K classes with their fitted fraction built in: clean labels,
    a random set of flipped labels (the noisy label another class), and class probabilities whose argmax is
    the noisy label on exactly m of the flipped points and the clean label or a third class on the rest (the
    unflipped points mostly predicted right); the fraction is m over the number of flipped points."""
    g = hidden_generator(label)
    for n, k, share in ((200, 10, None), (100, 2, None), (300, 3, 1.0), (150, 10, 0.0), (500, 10, None)):
        if share is None:
            share = float(0.1 + 0.8 * torch.rand((), generator=g))
        clean = torch.randint(0, k, (n,), generator=g)
        flipped = torch.randperm(n, generator=g)[:max(3, int(n * (0.1 + 0.3 * float(torch.rand((), generator=g)))))]
        noisy = clean.clone()
        noisy[flipped] = (clean[flipped] + torch.randint(1, k, (len(flipped),), generator=g)) % k
        predicted = torch.where(torch.rand(n, generator=g) < 0.8, clean, torch.randint(0, k, (n,), generator=g))
        fitted = round(share * len(flipped))
        predicted[flipped[:fitted]] = noisy[flipped[:fitted]]
        rest = flipped[fitted:]
        predicted[rest] = clean[rest]
        if k >= 3:                                        # half of the unfitted flips: neither label
            third = rest[::2]
            other = (clean[third] + 1) % k
            other = torch.where(other == noisy[third], (other + 1) % k, other)
            predicted[third] = other
        logits = torch.randn(n, k, generator=g)
        logits[torch.arange(n), predicted] = logits.max(1).values + 0.5 + torch.rand(n, generator=g)
        yield torch.softmax(logits, 1), noisy, clean, fitted / len(flipped)


def _verify_flipped_fitted(answer) -> None:
    for probabilities, noisy, clean, fraction in _noisy_predictions("flooding-ex-noise"):
        n, k = probabilities.shape
        got = as_number(answer(probabilities.clone(), noisy.clone(), clean.clone()), "the fraction")
        expect_close(got, fraction, rtol=1e-9, atol=1e-12,
                     what=f"the fraction of flipped labels fitted in a hidden set of {n} points and {k} classes")


EXERCISES = [
    Exercise(
        label="flooding-ex-signs", chapter="flooding", function="sign_change_rate",
        asks="Write the statistic behind F11: how often sign(L − b) changes between consecutive steps once the "
             "training loss has first gone below b.",
        expected="from the first step whose loss is strictly below b to the end, the number of consecutive pairs "
                 "of steps on opposite sides of b divided by the number of such pairs (1 for strict alternation), "
                 "as one number; steps before the first crossing do not count",
        minutes=15, prerequisites="section 3 (F5, F11: the sign-change rate against its shuffled null)",
        verify=_verify_sign_changes),
    Exercise(
        label="flooding-ex-penalty", chapter="flooding", function="penalised_loss",
        asks="Write the objective L + λ‖∇L‖² that unequal descent and ascent steps ε₁ > ε₂ follow (F4), "
             "differentiable in θ.",
        expected="L(θ) + λ‖∇L(θ)‖² with λ = ε₁ε₂ / (2(ε₁ − ε₂)), as a 0-dimensional tensor built from the θ "
                 "passed in whose gradient in θ is ∇L + 2λHg (the gradient of L kept in the graph, "
                 "create_graph=True)",
        minutes=20, prerequisites="section 2 (F3, F4)",
        verify=_verify_penalty),
    Exercise(
        label="flooding-ex-noise", chapter="flooding", function="flipped_fraction_fitted",
        asks="Write the statistic section 4 prints beside b / H: the fraction of flipped training labels that a "
             "model's predictions reproduce.",
        expected="among the points whose noisy label differs from the clean one (only those), the fraction whose "
                 "predicted class, the argmax of the probabilities over the classes, equals the noisy label, "
                 "as one number",
        minutes=10, prerequisites="section 4 (the noise entropy H, the cell that sets the chosen b against H and "
                                  "counts the flipped training labels fitted)",
        verify=_verify_flipped_fitted),
]
