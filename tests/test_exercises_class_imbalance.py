"""Plausible wrong answers to the class-imbalance exercises (tests/test_exercises.py runs each against its check)."""

import torch
import torch.nn.functional as F


def _fbeta(logits, targets, beta):
    p, y = torch.sigmoid(logits), targets.to(logits.dtype)
    return (1 + beta ** 2) * (y * p).sum() / (beta ** 2 * y.sum() + p.sum()), y


def _swapped_weights(logits, targets, beta):
    """The two weights exchanged: F/(1 + β²) for positives."""
    f, y = _fbeta(logits, targets, beta)
    return y * f / (1 + beta ** 2) + (1 - y) * (1 - f / (1 + beta ** 2))


def _beta_not_squared(logits, targets, beta):
    """β where β² belongs, in F_β and in the weights."""
    p, y = torch.sigmoid(logits), targets.to(logits.dtype)
    f = (1 + beta) * (y * p).sum() / (beta * y.sum() + p.sum())
    return y * (1 - f / (1 + beta)) + (1 - y) * f / (1 + beta)


def _f1_weights_whatever_beta(logits, targets, beta):
    """CI2's F1 weights, β ignored."""
    f, y = _fbeta(logits, targets, 1.0)
    return y * (1 - f / 2) + (1 - y) * f / 2


def _hard_fbeta_weights(logits, targets, beta):
    """F_β of the thresholded predictions instead of the smoothed F_β."""
    pred, y = (logits > 0).to(logits.dtype), targets.to(logits.dtype)
    f = (1 + beta ** 2) * (y * pred).sum() / (beta ** 2 * y.sum() + pred.sum())
    return y * (1 - f / (1 + beta ** 2)) + (1 - y) * f / (1 + beta ** 2)


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
    "class-imbalance-ex-f1": {"weights swapped": _swapped_weights, "beta not squared": _beta_not_squared,
                              "beta ignored": _f1_weights_whatever_beta, "hard F_beta": _hard_fbeta_weights},
    "class-imbalance-ex-posthoc": {"prior added": _posthoc_plus, "tau ignored": _posthoc_tau_ignored},
    "class-imbalance-ex-adjusted-loss": {"post-hoc sign": _adjusted_minus, "summed": _adjusted_summed},
}


def test_log_counts_instead_of_log_prior_is_accepted():
    """log n_y and log π_y differ by a constant on every logit, which softmax ignores: not a wrong answer."""
    from kitlib.exercises import check_answer

    def log_counts(logits, targets, counts, tau):
        return F.cross_entropy(logits + tau * counts.to(logits.dtype).log(), targets)

    assert check_answer("class-imbalance-ex-adjusted-loss", log_counts)


def test_weights_at_any_common_scale_are_accepted():
    """|∂F_β/∂p_i| itself (the scale (1 + β²)/D left in) is as right as the normalised weights."""
    from kitlib.exercises import check_answer

    def unnormalised(logits, targets, beta):
        f, y = _fbeta(logits, targets, beta)
        d = beta ** 2 * y.sum() + torch.sigmoid(logits).sum()
        return (y * ((1 + beta ** 2) - f) + (1 - y) * f) / d

    assert check_answer("class-imbalance-ex-f1", unnormalised)
