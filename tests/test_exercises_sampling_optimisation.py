"""Plausible wrong answers to the sampling-optimisation exercises (tests/test_exercises.py runs each against its
check), and answers that differ from the chapter's solution only in ways the checks must accept."""

import math

import torch


def _snis_without_q(deltas, loss_changes, alpha, log_q):
    """The proposal density forgotten: weights exp(−Δl/α) alone (targets p·q instead of p)."""
    weights = torch.softmax(-loss_changes / alpha, dim=0)
    return weights @ deltas, float(1 / (weights**2).sum())


def _snis_times_q(deltas, loss_changes, alpha, log_q):
    """Multiplies by q instead of dividing by it."""
    weights = torch.softmax(-loss_changes / alpha + log_q, dim=0)
    return weights @ deltas, float(1 / (weights**2).sum())


def _snis_naive_exp(deltas, loss_changes, alpha, log_q):
    """exp(−Δl/α)/q without subtracting the largest exponent: 0/0 or inf/inf at small α."""
    raw = torch.exp(-loss_changes / alpha - log_q)
    weights = raw / raw.sum()
    return weights @ deltas, float(1 / (weights**2).sum())


def _snis_ess_fraction(deltas, loss_changes, alpha, log_q):
    """The ESS divided by N (the fraction of effective samples, not their number)."""
    weights = torch.softmax(-loss_changes / alpha - log_q, dim=0)
    return weights @ deltas, float(1 / (weights**2).sum()) / len(weights)


def _snis_ess_max_weight(deltas, loss_changes, alpha, log_q):
    """Another ESS estimator, 1/max w̃, instead of the asked 1/Σw̃² (the two agree only when one weight is ~1)."""
    weights = torch.softmax(-loss_changes / alpha - log_q, dim=0)
    return weights @ deltas, float(1 / weights.max())


def _official_log_q(deltas, direction):
    square = -0.5 * (deltas * deltas).sum(-1)
    return torch.logaddexp(square, square + deltas @ direction - 0.5 * direction @ direction) - math.log(2)


def _mgs_without_q(deltas, task_losses, current_loss, direction, beta):
    """Random search's weights exp(−β(C_k − C)): the proposal density forgotten."""
    return torch.softmax(-beta * (task_losses - current_loss), dim=0) @ deltas


def _mgs_guided_component_only(deltas, task_losses, current_loss, direction, beta):
    """Divides by the guided component N(g, I) alone instead of the 50/50 mixture."""
    log_q = -0.5 * ((deltas - direction) ** 2).sum(-1)
    return torch.softmax(-beta * (task_losses - current_loss) - log_q, dim=0) @ deltas


def _mgs_sign_flipped(deltas, task_losses, current_loss, direction, beta):
    """exp(+β(C_k − C)): favours the candidates that raise the task loss."""
    return torch.softmax(beta * (task_losses - current_loss) - _official_log_q(deltas, direction), dim=0) @ deltas


def _density_official(deltas, centre, sigma):
    """The official formula: unit variance and no normalising constant, whatever σ."""
    return _official_log_q(deltas, centre)


def _density_no_constant(deltas, centre, sigma):
    """The normalising constant (2πσ²)^{−d/2} dropped."""
    zero = -0.5 * (deltas**2).sum(-1) / sigma**2
    guided = -0.5 * ((deltas - centre) ** 2).sum(-1) / sigma**2
    return torch.logaddexp(zero, guided) - math.log(2)


def _density_mean_of_logs(deltas, centre, sigma):
    """The mean of the two components' log-densities instead of the log of their mean."""
    constant = -0.5 * deltas.shape[-1] * math.log(2 * math.pi * sigma**2)
    zero = -0.5 * (deltas**2).sum(-1) / sigma**2
    guided = -0.5 * ((deltas - centre) ** 2).sum(-1) / sigma**2
    return constant + 0.5 * (zero + guided)


def _density_sum_not_mean(deltas, centre, sigma):
    """The two Gaussian densities added without the factors ½ (off by log 2)."""
    constant = -0.5 * deltas.shape[-1] * math.log(2 * math.pi * sigma**2)
    zero = -0.5 * (deltas**2).sum(-1) / sigma**2
    guided = -0.5 * ((deltas - centre) ** 2).sum(-1) / sigma**2
    return constant + torch.logaddexp(zero, guided)


def _density_naive(deltas, centre, sigma):
    """The density itself, then its log (not log space): (2πσ²)^{−d/2} overflows a float in 650 dimensions at
    σ = 0.03 (OverflowError), and the exponentials underflow."""
    dim = deltas.shape[-1]
    constant = (2 * math.pi * sigma**2) ** (-dim / 2)
    zero = torch.exp(-0.5 * (deltas**2).sum(-1) / sigma**2)
    guided = torch.exp(-0.5 * ((deltas - centre) ** 2).sum(-1) / sigma**2)
    return torch.log(constant * (0.5 * zero + 0.5 * guided))


WRONG_ANSWERS = {
    "sampling-ex-newton-alpha": {"no 1/q": _snis_without_q, "times q": _snis_times_q,
                                 "naive exp": _snis_naive_exp, "ESS as a fraction": _snis_ess_fraction,
                                 "ESS as 1/max weight": _snis_ess_max_weight},
    "sampling-ex-unguided-mgs": {"no 1/q": _mgs_without_q, "guided component only": _mgs_guided_component_only,
                                 "sign flipped": _mgs_sign_flipped},
    "sampling-ex-true-density": {"official formula": _density_official, "no constant": _density_no_constant,
                                 "mean of logs": _density_mean_of_logs, "sum, not mean": _density_sum_not_mean,
                                 "naive density (not log space)": _density_naive},
}


def test_ess_from_unnormalised_weights_and_a_tensor_ess_are_accepted():
    """(Σw)²/Σw² with unnormalised (but stable) weights is the same number; a 0-d tensor is a number."""
    from kitlib.exercises import check_answer

    def unnormalised(deltas, loss_changes, alpha, log_q):
        logits = -loss_changes / alpha - log_q
        w = torch.exp(logits - logits.max())
        return (w @ deltas) / w.sum(), w.sum() ** 2 / (w**2).sum()

    assert check_answer("sampling-ex-newton-alpha", unnormalised)


def test_a_constant_in_the_official_log_q_is_accepted():
    """The official density with its ½ factors dropped, or with (d/2) log 2π added, changes log q by a constant,
    which cancels in the normalised weights: not a wrong answer."""
    from kitlib.exercises import check_answer

    def shifted(deltas, task_losses, current_loss, direction, beta):
        log_q = _official_log_q(deltas, direction) + math.log(2) + 0.5 * deltas.shape[-1] * math.log(2 * math.pi)
        return torch.softmax(-beta * (task_losses - current_loss) - log_q, dim=0) @ deltas

    assert check_answer("sampling-ex-unguided-mgs", shifted)


def test_a_density_from_torch_distributions_normal_is_accepted():
    """torch.distributions.Normal built from Python floats keeps its parameters in float32: the log-density is
    right to float32 rounding of log σ and σ², an absolute error the check must accept."""
    from kitlib.exercises import check_answer

    def with_normal(deltas, centre, sigma):
        zero = torch.distributions.Normal(0.0, sigma).log_prob(deltas).sum(-1)
        guided = torch.distributions.Normal(centre, sigma).log_prob(deltas).sum(-1)
        return torch.logaddexp(zero, guided) - math.log(2)

    assert check_answer("sampling-ex-true-density", with_normal)


def test_a_wrong_return_type_is_a_wrong_answer_not_a_crash():
    import pytest

    from kitlib.exercises import WrongAnswer, check_answer

    with pytest.raises(WrongAnswer):
        check_answer("sampling-ex-newton-alpha", lambda deltas, loss_changes, alpha, log_q: deltas.mean(0))
    with pytest.raises(WrongAnswer):
        check_answer("sampling-ex-true-density", lambda deltas, centre, sigma: None)
