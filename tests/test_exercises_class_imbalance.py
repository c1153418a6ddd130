"""Plausible wrong answers to the class-imbalance exercises (tests/test_exercises.py runs each against its check)."""

import torch
import torch.nn.functional as F


def _swapped_f1_weights(logits, targets):
    """F1/2 for positives and 1 − F1/2 for negatives: the two weights exchanged."""
    p, y = torch.sigmoid(logits), targets.to(logits.dtype)
    f1 = 2 * (y * p).sum() / (y.sum() + p.sum())
    return y * f1 / 2 + (1 - y) * (1 - f1 / 2)


def _hard_f1_weights(logits, targets):
    """F1 of the thresholded predictions instead of the smoothed F1."""
    pred, y = (logits > 0).to(logits.dtype), targets.to(logits.dtype)
    f1 = 2 * (y * pred).sum() / (y.sum() + pred.sum())
    return y * (1 - f1 / 2) + (1 - y) * f1 / 2


def _posthoc_plus(logits, counts, tau):
    """The prior added instead of subtracted."""
    return (logits + tau * (counts.to(logits.dtype) / counts.sum()).log()).argmax(-1)


def _posthoc_tau_ignored(logits, counts, tau):
    """τ = 1 whatever τ is asked."""
    return (logits - (counts.to(logits.dtype) / counts.sum()).log()).argmax(-1)


def _adjusted_minus(logits, targets, counts, tau):
    """The post-hoc sign inside the loss."""
    return F.cross_entropy(logits - tau * (counts.to(logits.dtype) / counts.sum()).log(), targets)


def _adjusted_summed(logits, targets, counts, tau):
    """Summed over examples instead of averaged."""
    return F.cross_entropy(logits + tau * (counts.to(logits.dtype) / counts.sum()).log(), targets,
                           reduction="sum")


WRONG_ANSWERS = {
    "class-imbalance-ex-f1": {"weights swapped": _swapped_f1_weights, "hard F1": _hard_f1_weights},
    "class-imbalance-ex-posthoc": {"prior added": _posthoc_plus, "tau ignored": _posthoc_tau_ignored},
    "class-imbalance-ex-adjusted-loss": {"post-hoc sign": _adjusted_minus, "summed": _adjusted_summed},
}


def test_log_counts_instead_of_log_prior_is_accepted():
    """log n_y and log π_y differ by a constant on every logit, which softmax ignores: not a wrong answer."""
    from kitlib.exercises import check_answer

    def log_counts(logits, targets, counts, tau):
        return F.cross_entropy(logits + tau * counts.to(logits.dtype).log(), targets)

    assert check_answer("class-imbalance-ex-adjusted-loss", log_counts)
