"""Exercises of the `class-imbalance` chapter, each verified on hidden inputs against kitlib.imbalance
(itself tested against autograd and closed forms in tests/test_imbalance.py)."""

from __future__ import annotations

import torch

from kitlib.exercises import Exercise, WrongAnswer, expect_close, hidden_generator
from kitlib.imbalance import f1_weights, logit_adjusted_loss, posthoc_adjust


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


def _verify_f1(answer) -> None:
    for logits, targets in _binary_problems("class-imbalance-ex-f1"):
        got = answer(logits.clone(), targets.clone())
        expect_close(got, f1_weights(logits, targets), rtol=1e-6,
                     what=f"the weights for {len(logits)} hidden examples")


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
        label="class-imbalance-ex-f1", chapter="class-imbalance", function="f1_loss_weights",
        asks="Write the per-example weights that turn binary cross-entropy's gradient into smoothed F1's (CI2).",
        expected="weight 1 − F1/2 for each positive and F1/2 for each negative, with F1 the smoothed F1 "
                 "2Σyp/(Σy + Σp) of the current probabilities p = σ(z), as a tensor of one weight per example",
        minutes=10, prerequisites="section 1 (CI2); `smoothed_f1`", verify=_verify_f1),
    Exercise(
        label="class-imbalance-ex-posthoc", chapter="class-imbalance", function="posthoc_predictions",
        asks="Write post-hoc logit adjustment: the class predicted from logits, training class counts and τ.",
        expected="for each row, the index of the largest z_y − τ log π_y, with π_y = n_y / Σn the training prior "
                 "(rare classes are favoured, so the sign of the shift matters)",
        minutes=10, prerequisites="section 2 (CI3); `posthoc_adjust`", verify=_verify_posthoc),
    Exercise(
        label="class-imbalance-ex-adjusted-loss", chapter="class-imbalance", function="logit_adjusted_cross_entropy",
        asks="Write the logit-adjusted cross-entropy from logits, targets, class counts and τ.",
        expected="the mean over examples of the softmax cross-entropy of z + τ log π (the prior added inside the "
                 "loss, the opposite sign of post-hoc adjustment), differentiable in the logits",
        minutes=15, prerequisites="sections 2–3 (CI3, CI4); `logit_adjusted_loss`", verify=_verify_adjusted_loss),
]
