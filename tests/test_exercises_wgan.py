"""Plausible wrong answers to the wgan exercises (tests/test_exercises.py runs each against its check)."""

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _grad_norms(critic, points, create_graph=True):
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=create_graph)
    return grad.flatten(1).norm(dim=1)


def _two_sided(critic, real, fake, a):
    """WGAN-GP's two-sided (‖∇D‖ − 1)²: also penalises slopes below 1."""
    return (_grad_norms(critic, a * real + (1 - a) * fake) - 1).pow(2).mean()


def _no_graph(critic, real, fake, a):
    """The right value, but the gradient norms are computed without create_graph: nothing to train with."""
    return (_grad_norms(critic, a * real + (1 - a) * fake, create_graph=False) - 1).clamp(min=0).pow(2).mean()


def _at_real_points(critic, real, fake, a):
    """The penalty at the real samples instead of at the interpolates."""
    return (_grad_norms(critic, real) - 1).clamp(min=0).pow(2).mean()


def _squared_norm(critic, real, fake, a):
    """max(0, ‖∇D‖² − 1)²: the squared norm where the norm belongs."""
    return (_grad_norms(critic, a * real + (1 - a) * fake).pow(2) - 1).clamp(min=0).pow(2).mean()


def _parts(potential, real, fake):
    cost = torch.cdist(real, fake)
    rows, cols = linear_sum_assignment(cost.numpy())
    return cost, float(cost[rows, cols].mean())


def _ratio_not_share(potential, real, fake):
    """The c-transform estimate ÷ W1 (W4's and W5c's ratio) instead of the share of the zero critic's shortfall."""
    cost, w1 = _parts(potential, real, fake)
    return float(potential.mean() + (cost - potential[:, None]).min(dim=0).values.mean()) / w1


def _transform_over_the_wrong_set(potential, real, fake):
    """φ^c(y_j) = min_j [c − φ] for each real point: the minimum taken along the wrong axis of the cost."""
    cost, w1 = _parts(potential, real, fake)
    zero = float(cost.min(dim=0).values.mean())
    value = float(potential.mean() + (cost - potential[:, None]).min(dim=1).values.mean())
    return (value - zero) / (w1 - zero)


def _plus_potential(potential, real, fake):
    """φ^c(y) = min_i [‖x_i − y‖ + φ(x_i)]: the potential added inside the c-transform."""
    cost, w1 = _parts(potential, real, fake)
    zero = float(cost.min(dim=0).values.mean())
    value = float(potential.mean() + (cost + potential[:, None]).min(dim=0).values.mean())
    return (value - zero) / (w1 - zero)


def _nearest_neighbour_w1(potential, real, fake):
    """W1 replaced by the mean distance from each real point to its nearest generated one: nearest neighbours
    instead of a one-to-one matching."""
    cost, _ = _parts(potential, real, fake)
    zero = float(cost.min(dim=0).values.mean())
    value = float(potential.mean() + (cost - potential[:, None]).min(dim=0).values.mean())
    return (value - zero) / (float(cost.min(dim=1).values.mean()) - zero)


def _weiszfeld(points, iterations, inverse=True):
    y = points.mean(axis=0)
    for _ in range(iterations):
        distances = np.maximum(np.linalg.norm(points - y, axis=1), 1e-12)
        weights = 1 / distances if inverse else distances
        y = weights @ points / weights.sum()
    return y


def _mean_point(points):
    """The mean (the mean image of §4): the minimiser of the mean *squared* distance."""
    return points.mean(axis=0)


def _coordinate_median(points):
    """The coordinate-wise median: the minimiser under the L1 ground cost, not the Euclidean one."""
    return np.median(points, axis=0)


def _medoid(points):
    """The data point with the smallest mean distance to the others: restricted to the data."""
    return points[np.linalg.norm(points[:, None] - points[None], axis=2).mean(1).argmin()]


def _distance_weights(points):
    """Weights ‖x_i − y‖ instead of 1/‖x_i − y‖: pulled towards far points instead of away from them."""
    return _weiszfeld(points, 200, inverse=False)


def _five_steps(points):
    """Five Weiszfeld steps: not converged."""
    return _weiszfeld(points, 5)


WRONG_ANSWERS = {
    "wgan-ex-lp": {"two-sided": _two_sided, "no create_graph": _no_graph, "at real points": _at_real_points,
                   "squared norm": _squared_norm},
    "wgan-ex-lr": {"ratio, not share": _ratio_not_share, "wrong axis": _transform_over_the_wrong_set,
                   "plus potential": _plus_potential, "nearest-neighbour W1": _nearest_neighbour_w1},
    "wgan-ex-m": {"mean": _mean_point, "coordinate-wise median": _coordinate_median, "medoid": _medoid,
                  "distance weights": _distance_weights, "five steps": _five_steps},
}


def _share_as_tensor(potential, real, fake):
    """A right answer that returns a 0-d tensor (the chapter's returns a float)."""
    cost, w1 = _parts(potential, real, fake)
    zero = cost.min(dim=0).values.mean()
    value = potential.mean() + (cost - potential[:, None]).min(dim=0).values.mean()
    return (value - zero) / (w1 - zero)


def test_a_share_returned_as_a_tensor_is_accepted():
    from kitlib.exercises import check_answer

    assert check_answer("wgan-ex-lr", _share_as_tensor)


def test_the_checks_leave_the_global_random_state_alone():
    """A check draws its hidden inputs from its own generator: the chapter's random state does not move."""
    from kitlib.exercises import get_exercise

    state = torch.get_rng_state()
    get_exercise("wgan-ex-lr").verify(_share_as_tensor)
    try:
        get_exercise("wgan-ex-lp").verify(_two_sided)
    except AssertionError:
        pass
    assert torch.equal(state, torch.get_rng_state())


def test_a_near_miss_median_gets_the_not_a_minimum_message():
    """A point 2e-7 from the median (a general-purpose minimiser stopped at its default tolerance) fails the
    first-order test, with the message that says why, before the distance test can fail it."""
    import pytest

    from kitlib.exercises import WrongAnswer, get_exercise

    def near_miss(points):
        y = _weiszfeld(points, 2000)
        return y + 2e-7 * np.ones_like(y) / np.sqrt(len(y))

    get_exercise("wgan-ex-m").verify(lambda p: _weiszfeld(p, 2000))          # the same iteration, converged, passes
    with pytest.raises(WrongAnswer, match="not a minimum"):
        get_exercise("wgan-ex-m").verify(near_miss)
