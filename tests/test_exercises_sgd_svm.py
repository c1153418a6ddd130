"""Plausible wrong answers to the sgd-svm exercises (tests/test_exercises.py runs each against its check)."""

import torch


def _power_iteration(loss_fn, theta, v0, iterations, normalise=True):
    theta = theta.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(theta), theta, create_graph=True)
    v = v0 / v0.norm()
    for _ in range(iterations):
        (hv,) = torch.autograd.grad(grad @ v, theta, retain_graph=True)
        v = hv / hv.norm() if normalise else hv
    (hv,) = torch.autograd.grad(grad @ v, theta, retain_graph=True)
    return float(v @ hv), v


def _lambda_not_threshold(loss_fn, theta, v0, iterations):
    """λ_max itself instead of the threshold 2/λ_max."""
    return _power_iteration(loss_fn, theta, v0, iterations)[0]


def _one_over_lambda(loss_fn, theta, v0, iterations):
    """1/λ_max: the threshold of the step that lands on a quadratic's minimum, not of stability."""
    return 1 / _power_iteration(loss_fn, theta, v0, iterations)[0]


def _five_iterations(loss_fn, theta, v0, iterations):
    """Stops after five power iterations whatever is asked: the estimate has not converged."""
    return 2 / _power_iteration(loss_fn, theta, v0, 5)[0]


def _rayleigh_unnormalised(loss_fn, theta, v0, iterations):
    """vᵀHv without dividing by vᵀv, after iterations that do not normalise v."""
    return 2 / _power_iteration(loss_fn, theta, v0, iterations, normalise=False)[0]


def _gradients(model, points):
    params = list(model.parameters())
    return torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(model(p[None]).squeeze(), params)])
                        for p in points])


def _path_kernel_variant(model, x_train, y_train, x_query, lr, steps, sign=1.0, summed=False, after=False,
                         weighted=True):
    params, n = list(model.parameters()), len(x_train)
    kernel = torch.zeros(len(x_query), n, dtype=x_train.dtype)
    for _ in range(steps):
        jq, jt = _gradients(model, x_query), _gradients(model, x_train)
        with torch.no_grad():
            d_loss = (model(x_train) - y_train).squeeze(-1) / (1 if summed else n)
            step = -lr * (jt.T @ d_loss)
            torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(params) + step, params)
        if after:
            jq, jt = _gradients(model, x_query), _gradients(model, x_train)
        kernel += sign * lr * (jq @ jt.T) * (d_loss if weighted else 1)
    return kernel


def _a_not_k_tilde(*args):
    """−Σ η ℓ' K, the path kernel's weights A of §3, instead of K̃ = −A: the sign of Remark 2 lost."""
    return _path_kernel_variant(*args, sign=-1.0)


def _summed_loss(*args):
    """ℓ' of the summed loss Σ ½(f − y)² (no 1/N), in the kernel and in the steps."""
    return _path_kernel_variant(*args, summed=True)


def _kernel_after_the_step(*args):
    """The tangent kernel at θ_{t+1}, after the step, instead of at θ_t."""
    return _path_kernel_variant(*args, after=True)


def _plain_path_kernel(*args):
    """The unweighted path kernel Σ η K_t: the loss derivative left out."""
    return _path_kernel_variant(*args, weighted=False)


WRONG_ANSWERS = {
    "sgd-svm-ex-stability": {"λ, not 2/λ": _lambda_not_threshold, "1/λ": _one_over_lambda,
                             "five iterations": _five_iterations, "unnormalised Rayleigh": _rayleigh_unnormalised},
    "sgd-svm-ex-lossweighted": {"A instead of −A": _a_not_k_tilde, "summed loss": _summed_loss,
                                "kernel after the step": _kernel_after_the_step,
                                "plain path kernel": _plain_path_kernel},
}


def test_the_norm_of_hv_is_accepted_as_the_eigenvalue():
    """‖Hv‖ for the converged unit v is |λ_max|, equal to λ_max when the largest eigenvalue is also the largest in
    magnitude (true of the hidden Hessians): an accepted alternative to the Rayleigh quotient."""
    from kitlib.exercises import check_answer

    def norm_of_hv(loss_fn, theta, v0, iterations):
        theta = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(theta), theta, create_graph=True)
        v = v0 / v0.norm()
        for _ in range(iterations + 1):
            (hv,) = torch.autograd.grad(grad @ v, theta, retain_graph=True)
            lam, v = float(hv.norm()), hv / hv.norm()
        return 2 / lam

    assert check_answer("sgd-svm-ex-stability", norm_of_hv)


def test_the_loss_weighted_identity_beta_minus_k_tilde_is_the_euler_sum():
    """Remark 2's reading of the answer: β(x) − Σ_i K̃(x, x_i) equals P5's kernel machine (the Euler sum)."""
    import copy

    from torch import nn

    from kitlib.path_kernel import accumulate_path_kernel

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.linspace(-1, 1, 6, dtype=torch.float64)[:, None]
    xq = torch.linspace(-1.2, 1.2, 5, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x)
    with torch.no_grad():
        beta = model(xq).squeeze(-1)
    k_tilde = _path_kernel_variant(copy.deepcopy(model), x, y, xq, 0.1, 10)
    derivative = lambda f, t: (f - t.squeeze(-1)) / len(t)
    kernel = accumulate_path_kernel(copy.deepcopy(model), derivative, x, y, xq, 0.1, 10)
    assert torch.allclose(beta - k_tilde.sum(1), kernel.kernel_machine().squeeze(-1), rtol=1e-10, atol=1e-12)


def test_every_hidden_hessian_has_a_positive_dominant_eigenvalue_with_a_gap():
    """The check's tolerance rests on λ₁ = λ_max > 0 being the largest in magnitude with |λ₂|/λ₁ ≤ 0.7 (60
    iterations then leave a Rayleigh error ~0.7¹²⁰): by construction for the quadratics, measured here for all."""
    from kitlib.exercises.sgd_svm import _stability_problems

    for loss, theta, top in _stability_problems("sgd-svm-ex-stability"):
        eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))
        magnitudes = eigenvalues.abs().sort(descending=True).values
        assert abs(float(eigenvalues.max()) - float(top)) <= 1e-12 * float(top)
        assert float(eigenvalues.max()) == float(magnitudes[0]) > 0
        assert float(magnitudes[1]) <= 0.7 * float(magnitudes[0])


def _threshold(loss_fn, theta, v0, iterations):
    return 2 / _power_iteration(loss_fn, theta, v0, iterations)[0]


def test_the_checks_leave_the_global_random_state_alone(monkeypatch):
    """A check draws its hidden inputs (the hidden network's weights included) from its own generator: the
    chapter's CPU random state does not move and no global seeding (CPU or CUDA) happens."""
    from kitlib.exercises import get_exercise

    def no_global_seeding(*args, **kwargs):
        raise AssertionError("a check seeded a global random generator")

    for name in ("manual_seed", "seed"):
        monkeypatch.setattr(torch, name, no_global_seeding)
        monkeypatch.setattr(torch.random, name, no_global_seeding)
    for name in ("manual_seed", "manual_seed_all", "seed", "seed_all"):
        monkeypatch.setattr(torch.cuda, name, no_global_seeding)
    state = torch.get_rng_state()
    get_exercise("sgd-svm-ex-stability").verify(_threshold)
    get_exercise("sgd-svm-ex-lossweighted").verify(_path_kernel_variant)
    assert torch.equal(state, torch.get_rng_state())
