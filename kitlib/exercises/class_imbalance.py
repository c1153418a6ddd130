"""Exercises of the `class-imbalance` chapter, each verified on hidden inputs against kitlib.imbalance
(itself tested against autograd and closed forms in tests/test_imbalance.py)."""

from __future__ import annotations

import torch

from kitlib.exercises import Exercise, WrongAnswer, expect_close, hidden_generator
from kitlib.imbalance import logit_adjusted_loss, posthoc_adjust


def _binary_problems(label: str):
    """Five hidden binary problems: logits (N,) float64 and imbalanced 0/1 targets, N from 20 to 200."""
    g = hidden_generator(label)
    for n in (20, 50, 80, 150, 200):
        logits = 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
        targets = (torch.rand(n, generator=g) < 0.15).long()
        targets[0] = 1
        yield logits, targets


def _multiclass_problems(label: str):
    """Four hidden K-class problems: logits (N, K), targets (N,), counts (K,) long-tailed, τ in [0, 2]."""
    g = hidden_generator(label)
    for n, k in ((30, 3), (60, 5), (100, 10), (40, 7)):
        logits = 3.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
        targets = torch.randint(k, (n,), generator=g)
        counts = torch.randint(1, 500, (k,), generator=g).sort(descending=True).values
        tau = float(2 * torch.rand((), generator=g))
        yield logits, targets, counts, tau


def _smoothed_fbeta(p: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """F_β = (1 + β²) Σ y p / (β² Σ y + Σ p), true and predicted positives counted with probabilities."""
    return (1 + beta ** 2) * (y * p).sum() / (beta ** 2 * y.sum() + p.sum())


def _verify_f1(answer) -> None:
    """The weights must be |∂F_β/∂p_i| up to one positive factor: the reference differentiates F_β by
    autograd (no formula for the weights is written here), and both are normalised to sum 1."""
    g = hidden_generator("class-imbalance-ex-f1", salt=1)
    for (logits, targets), beta in zip(_binary_problems("class-imbalance-ex-f1"), (0.5, 1.0, 2.0, 3.0, 1.5)):
        beta = float(beta * (0.9 + 0.2 * torch.rand((), generator=g)))
        p = torch.sigmoid(logits).detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(_smoothed_fbeta(p, targets.double(), beta), p)
        want = slope.abs()
        got = answer(logits.clone(), targets.clone(), beta)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise WrongAnswer(f"the answer should be a tensor of {len(want)} weights, one per example")
        got = got.detach().double()
        if not bool((got > 0).all()):
            raise WrongAnswer("every weight should be positive")
        expect_close(got / got.sum(), want / want.sum(), rtol=1e-6,
                     what=f"the weights for {len(logits)} hidden examples (β drawn in [0.45, 3.3], any common "
                          f"positive factor allowed)")


def _verify_posthoc(answer) -> None:
    for logits, targets, counts, tau in _multiclass_problems("class-imbalance-ex-posthoc"):
        prior = torch.log(counts.double() / counts.sum())
        want = posthoc_adjust(logits, prior, tau).argmax(-1)
        got = answer(logits.clone(), counts.clone(), tau)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise WrongAnswer(f"the answer should be a tensor of {len(want)} class indices")
        wrong = int((got.long() != want).sum())
        if wrong:
            raise WrongAnswer(f"{wrong} of {len(want)} hidden predictions (K = {logits.shape[1]}, τ drawn in "
                              f"[0, 2]) differ from the adjusted rule")


def _verify_adjusted_loss(answer) -> None:
    for logits, targets, counts, tau in _multiclass_problems("class-imbalance-ex-adjusted-loss"):
        prior = torch.log(counts.double() / counts.sum())
        got = answer(logits.clone().requires_grad_(True), targets.clone(), counts.clone(), tau)
        if not isinstance(got, torch.Tensor) or got.dim() != 0:
            raise WrongAnswer("the answer should be one number (a 0-dimensional tensor): the mean loss")
        expect_close(got, logit_adjusted_loss(logits, targets, prior, tau), rtol=1e-6,
                     what=f"the mean loss on a hidden {logits.shape[1]}-class problem")
        if not got.requires_grad:
            raise WrongAnswer("the loss does not depend differentiably on the logits (it must, to train with it)")


EXERCISES = [
    Exercise(
        label="class-imbalance-ex-f1", chapter="class-imbalance", function="fbeta_loss_weights",
        asks="Derive and write the per-example cross-entropy weights that smoothed F_β asks for (CI2 for any β).",
        expected="weights proportional to |∂F_β/∂p_i| with F_β held constant: one value for every positive and "
                 "another for every negative, both depending on the current smoothed F_β and on β (they reduce "
                 "to CI2's 1 − F1/2 and F1/2 at β = 1); any common positive factor is accepted",
        minutes=20, prerequisites="section 1 (CI1, CI2)", verify=_verify_f1),
    Exercise(
        label="class-imbalance-ex-posthoc", chapter="class-imbalance", function="posthoc_predictions",
        asks="Write post-hoc logit adjustment: the class predicted from logits, training class counts and τ.",
        expected="for each row, the index of the largest z_y − τ log π_y, with π_y = n_y / Σn the training prior "
                 "(rare classes are favoured, so the sign of the shift matters)",
        minutes=5, prerequisites="section 2 (CI3)", verify=_verify_posthoc),
    Exercise(
        label="class-imbalance-ex-adjusted-loss", chapter="class-imbalance", function="logit_adjusted_cross_entropy",
        asks="Write the logit-adjusted cross-entropy from logits, targets, class counts and τ.",
        expected="the mean over examples of the softmax cross-entropy of z + τ log π (the prior added inside the "
                 "loss, the opposite sign of post-hoc adjustment), differentiable in the logits",
        minutes=10, prerequisites="sections 2–3 (CI3, CI4)", verify=_verify_adjusted_loss),
]
