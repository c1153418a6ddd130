"""kitlib.attention and kitlib.attention_lm (chapter performer): random features against loops and Gauss–Hermite
quadrature, Lemma 2 against quadrature and Monte Carlo, linear attention against the explicit n×n matrices, and
the wrong versions that the chapter's identities (PF1, PF2, LA1) must reject."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from kitlib.attention import (attention_costs, attention_matrix, chi_quantile_radii, elu_features, favor_attention,
                              favor_features, iid_gaussian, kernel_estimates, kernel_mse_crossover, linear_attention,
                              numerical_rank, orthogonal_gaussian, orthogonal_quantile, pairs_with_cosine,
                              row_entropy, softmax_attention, softmax_kernel_mse)
from kitlib.attention_lm import AttentionLM, evaluate_loss, random_windows, train_steps

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def hermite_expectation(function, points=120):
    """E[f(t)] for t ~ N(0, 1) by Gauss–Hermite quadrature (independent of any sampling)."""
    nodes, weights = np.polynomial.hermite.hermgauss(points)
    return float(np.sum(weights * function(np.sqrt(2) * nodes)) / np.sqrt(np.pi))


# -- features ------------------------------------------------------------------------------------------------
def test_feature_dot_products_match_the_sums_written_out():
    x, y = torch.randn(2, 5, dtype=F64, generator=gen(1))
    omega = torch.randn(7, 5, dtype=F64, generator=gen(2))
    positive = sum(math.exp(float(w @ x - x @ x / 2)) * math.exp(float(w @ y - y @ y / 2)) for w in omega) / 7
    trig = math.exp(float(x @ x + y @ y) / 2) * sum(math.cos(float(w @ (x - y))) for w in omega) / 7
    assert favor_features(x, omega, "positive").shape == (7,)
    assert favor_features(x, omega, "trig").shape == (14,)
    assert float(favor_features(x, omega) @ favor_features(y, omega)) == pytest.approx(positive, rel=1e-12)
    assert float(favor_features(x, omega, "trig") @ favor_features(y, omega, "trig")) == pytest.approx(trig, rel=1e-12)
    assert (favor_features(10 * x, omega) > 0).all()
    with pytest.raises(ValueError):
        favor_features(x, omega, "relu")


def test_batched_feature_maps_equal_one_map_at_a_time():
    x = torch.randn(3, 4, dtype=F64, generator=gen(3))
    omegas = torch.randn(5, 6, 4, dtype=F64, generator=gen(4))
    batched = favor_features(x, omegas)
    assert batched.shape == (5, 3, 6)
    for i in range(5):
        assert torch.allclose(batched[i], favor_features(x, omegas[i]))


def _z_scores(features, x, y, draws=40_000, m=16):
    """(mean estimate − e^{x·y}) in closed-form standard errors, for a feature function f(x, omega)."""
    omega = torch.randn(draws, m, x.shape[-1], dtype=F64, generator=gen(5))
    estimate = (features(x, omega) * features(y, omega)).sum(-1)
    exact = torch.exp((x * y).sum(-1))
    return ((estimate.mean(0) - exact) / (softmax_kernel_mse(x, y, m, "positive") / draws).sqrt()).abs()


def test_pf1_positive_features_are_unbiased_and_the_version_without_the_norm_terms_fails():
    """PF1's tolerance is 4.5 standard errors; dropping −‖x‖²/2 multiplies the estimate by e^{(‖x‖²+‖y‖²)/2}."""
    x, y = pairs_with_cosine(8, [-0.5, 0.0, 0.5], 1, 1.0, gen(6))
    x, y = x[:, 0], y[:, 0]
    assert _z_scores(lambda v, w: favor_features(v, w), x, y).max() < 4.5
    without_norms = lambda v, w: torch.exp(v @ w.transpose(-1, -2)) / math.sqrt(w.shape[-2])  # noqa: E731
    assert _z_scores(without_norms, x, y).min() > 50


def test_trig_features_are_unbiased_and_unscaled_fourier_features_are_not():
    x, y = pairs_with_cosine(8, [-0.5, 0.5], 1, 1.0, gen(7))
    x, y = x[:, 0], y[:, 0]
    estimates = kernel_estimates(x, y, 16, 40_000, kinds=("trig",), generator=gen(8))["trig"]
    exact = torch.exp((x * y).sum(-1))
    error = (softmax_kernel_mse(x, y, 16, "trig") / 40_000).sqrt()
    assert ((estimates.mean(0) - exact).abs() / error).max() < 4.5
    gaussian_kernel = estimates.mean(0) / torch.exp((x * x + y * y).sum(-1) / 2)   # the Gaussian kernel only
    assert ((gaussian_kernel - exact).abs() / error).min() > 50


# -- Lemma 2 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cosine", [-0.9, 0.0, 0.7])
def test_lemma_2_matches_gauss_hermite_quadrature(cosine):
    """Var of one feature's product from a 1-D Gaussian integral along q+k (positive) or q−k (trig), / m."""
    m = 32
    x, y = pairs_with_cosine(6, [cosine], 1, 1.3, gen(9))
    x, y = x[0, 0], y[0, 0]
    s, z = float((x + y).norm()), float((x - y).norm())
    nx, ny, sm = float(x @ x), float(y @ y), math.exp(float(x @ y))
    second_positive = hermite_expectation(lambda t: np.exp(2 * s * t - nx - ny))
    second_trig = math.exp(nx + ny) * hermite_expectation(lambda t: np.cos(z * t) ** 2)
    assert float(softmax_kernel_mse(x, y, m, "positive")) == pytest.approx((second_positive - sm**2) / m, rel=1e-8)
    assert float(softmax_kernel_mse(x, y, m, "trig")) == pytest.approx((second_trig - sm**2) / m, rel=1e-8)


def test_pf2_monte_carlo_agrees_with_lemma_2_and_plausible_wrong_forms_fail_its_tolerance():
    m, draws = 16, 40_000
    x, y = pairs_with_cosine(8, [-0.9, -0.5], 1, 1.0, gen(10))
    estimates = kernel_estimates(x, y, m, draws, generator=gen(11))
    exact = torch.exp((x * y).sum(-1)).flatten()
    mse = {k: ((e.flatten(1) - exact) ** 2).mean(0) for k, e in estimates.items()}
    closed = {k: softmax_kernel_mse(x, y, m, k).flatten() for k in mse}
    assert ((mse["positive"] / closed["positive"] - 1).abs() < 0.15).all()
    assert ((mse["trig"] / closed["trig"] - 1).abs() < 0.05).all()
    no_inverse_sm = closed["trig"] * exact**2                  # SM^{-2} forgotten
    one_over_m = 2 * closed["trig"]                              # 1/m instead of 1/(2m)
    no_sm_squared = closed["positive"] / exact**2               # SM² forgotten
    assert (mse["trig"] / no_inverse_sm - 1).abs().max() > 0.05
    assert (mse["trig"] / one_over_m - 1).abs().max() > 0.05
    assert (mse["positive"] / no_sm_squared - 1).abs().max() > 0.15


def test_crossover_is_where_the_two_closed_forms_meet():
    for norm in (0.5, 1.0, 2.0):
        c = kernel_mse_crossover(norm)
        x, y = pairs_with_cosine(4, [c, c - 0.05, min(c + 0.05, 0.999)], 1, norm, gen(12))
        positive, trig = (softmax_kernel_mse(x, y, 1, k).flatten() for k in ("positive", "trig"))
        assert float(positive[0]) == pytest.approx(float(trig[0]), rel=1e-8)
        assert positive[1] < trig[1] and positive[2] > trig[2]
    assert kernel_mse_crossover(1.0) == pytest.approx(-0.171, abs=1e-3)


def test_pairs_have_the_asked_norms_and_cosines():
    x, y = pairs_with_cosine(10, [-0.9, 0.3], 5, 1.7, gen(13))
    assert x.shape == y.shape == (2, 5, 10)
    assert torch.allclose(x.norm(dim=-1), torch.full((2, 5), 1.7, dtype=F64))
    assert torch.allclose(y.norm(dim=-1), torch.full((2, 5), 1.7, dtype=F64))
    cosine = (x * y).sum(-1) / 1.7**2
    assert torch.allclose(cosine, torch.tensor([[-0.9], [0.3]], dtype=F64).expand(2, 5))


# -- orthogonal and quantile features ---------------------------------------------------------------------------
def test_orthogonal_gaussian_rows_are_orthogonal_within_blocks_and_marginally_gaussian():
    omega = orthogonal_gaussian(20, 8, gen(14))
    assert omega.shape == (20, 8)
    for start in (0, 8, 16):
        block = omega[start:start + 8]
        gram = block @ block.T
        assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros_like(gram), atol=1e-12)
    many = orthogonal_gaussian(16, 8, gen(15), draws=4000)
    norms = many.norm(dim=-1).flatten().numpy()
    assert stats.kstest(norms, stats.chi(8).cdf).pvalue > 1e-3
    assert stats.kstest(many[..., 0].flatten().numpy(), stats.norm.cdf).pvalue > 1e-3
    covariance = torch.einsum("bmi,bmj->ij", many, many) / (4000 * 16)
    assert torch.allclose(covariance, torch.eye(8, dtype=F64), atol=0.03)


def test_orthogonal_features_are_unbiased_and_have_lower_mse_than_iid():
    x, y = pairs_with_cosine(8, [-0.5], 16, 1.0, gen(16))
    exact = torch.exp((x * y).sum(-1))
    runs = {s: kernel_estimates(x, y, 16, 4000, kinds=("positive",), sampler=s, generator=gen(17))["positive"]
            for s in ("iid", "orthogonal")}
    assert abs(float((runs["orthogonal"] / exact).mean()) - 1) < 0.01
    mse = {s: float((((e - exact) / exact) ** 2).mean()) for s, e in runs.items()}
    assert mse["orthogonal"] < 0.9 * mse["iid"]


def test_quantile_radii_are_the_chi_quantiles_and_directions_stay_orthogonal():
    radii = chi_quantile_radii(9, 5)
    assert np.allclose(stats.chi(5).cdf(radii.numpy()), np.arange(1, 10) / 10, atol=1e-12)
    omega = orthogonal_quantile(9, 5, gen(18))
    assert torch.allclose(omega.norm(dim=-1).sort().values, radii)
    gram = omega[:5] @ omega[:5].T
    assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros_like(gram), atol=1e-12)
    assert orthogonal_quantile(9, 5, gen(19), draws=3).shape == (3, 9, 5)
    assert iid_gaussian(9, 5, gen(20), draws=3).shape == (3, 9, 5)


# -- attention -------------------------------------------------------------------------------------------------
def explicit_attention(scores, v, causal):
    if causal:
        scores = torch.tril(scores)
    return (scores / scores.sum(-1, keepdim=True)) @ v


@pytest.mark.parametrize("chunk", [1, 3, 7, None, 128])
def test_linear_attention_equals_the_explicit_matrices(chunk):
    phi_q, phi_k = torch.rand(2, 2, 13, 5, dtype=F64, generator=gen(21)) + 0.1
    v = torch.randn(2, 13, 3, dtype=F64, generator=gen(22))
    for causal in (False, True):
        expected = explicit_attention(phi_q @ phi_k.transpose(-1, -2), v, causal)
        assert torch.allclose(linear_attention(phi_q, phi_k, v, causal, chunk=chunk), expected, atol=1e-12)


def test_softmax_attention_is_the_textbook_formula():
    q, k, v = torch.randn(3, 1, 9, 4, dtype=F64, generator=gen(23))
    for causal in (False, True):
        scores = q @ k.transpose(-1, -2) / 2
        if causal:
            scores = scores.masked_fill(torch.triu(torch.ones(9, 9, dtype=torch.bool), 1), -math.inf)
        assert torch.allclose(softmax_attention(q, k, v, causal), torch.softmax(scores, -1) @ v, atol=1e-12)


def test_favor_attention_is_the_unshifted_estimate_and_approaches_softmax():
    q, k, v = 0.5 * torch.randn(3, 2, 11, 4, dtype=F64, generator=gen(24))
    omega = torch.randn(8, 4, dtype=F64, generator=gen(25))
    scale = 4**-0.25
    for causal in (False, True):
        scores = favor_features(scale * q, omega) @ favor_features(scale * k, omega).transpose(-1, -2)
        assert torch.allclose(favor_attention(q, k, v, omega, causal), explicit_attention(scores, v, causal),
                              atol=1e-10)
    many = orthogonal_gaussian(20_000, 4, gen(26))
    for causal in (False, True):
        error = (favor_attention(q, k, v, many, causal) - softmax_attention(q, k, v, causal)).abs().max()
        assert error < 0.02


def test_favor_attention_survives_long_queries_and_keys_in_float32():
    q, k, v = 20 * torch.randn(3, 64, 16, generator=gen(27))
    out = favor_attention(q, k, v, orthogonal_gaussian(32, 16, gen(28), dtype=torch.float32), causal=True)
    assert torch.isfinite(out).all()


def test_attention_matrix_rows_sum_to_one_and_respect_the_mask():
    scores = torch.rand(6, 6, dtype=F64, generator=gen(29)) + 0.01
    for causal in (False, True):
        weights = attention_matrix(scores, causal)
        assert torch.allclose(weights.sum(-1), torch.ones(6, dtype=F64))
    assert (torch.triu(attention_matrix(scores, True), 1) == 0).all()
    assert (elu_features(torch.tensor([-5.0, 0.0, 3.0])) > 0).all()


def test_row_entropy_matches_scipy_and_is_log_n_for_average_pooling():
    weights = torch.softmax(torch.randn(4, 10, dtype=F64, generator=gen(30)), -1)
    assert torch.allclose(row_entropy(weights), torch.tensor(stats.entropy(weights.numpy(), axis=1)))
    assert torch.allclose(row_entropy(torch.full((2, 16), 1 / 16, dtype=F64)), torch.full((2,), math.log(16), dtype=F64))
    assert float(row_entropy(torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))) == 0.0


def test_la1_rank_is_at_most_m_and_per_query_feature_draws_would_break_it():
    keys = torch.randn(64, 8, dtype=F64, generator=gen(31))
    omega = orthogonal_gaussian(6, 8, gen(32))
    phi_q, phi_k = favor_features(2 * keys / 8**0.25, omega), favor_features(keys / 8**0.25, omega)
    assert numerical_rank(phi_q @ phi_k.T) == 6 == np.linalg.matrix_rank((phi_q @ phi_k.T).numpy())
    assert numerical_rank(torch.exp(2 * keys @ keys.T / math.sqrt(8))) == 64
    assert numerical_rank(torch.tril(phi_q @ phi_k.T)) == 64
    # a plausible bug: a fresh ω for every query row; the "rank φφᵀ − m ≤ 0" bound of LA1 then fails
    rows = [favor_features(2 * keys[i] / 8**0.25, w) @ favor_features(keys / 8**0.25, w).T
            for i, w in enumerate(orthogonal_gaussian(6, 8, gen(33), draws=64))]
    assert numerical_rank(torch.stack(rows)) - 6 > 0


def test_attention_costs_reports_every_method_and_length():
    costs = attention_costs([16, 32], 8, 4, torch.device("cpu"), repeats=1, generator=gen(34))
    assert set(costs) == {"exact", "favor", "linear"}
    for cost in costs.values():
        assert len(cost["seconds"]) == len(cost["bytes"]) == 2 and min(cost["seconds"]) > 0
    assert costs["exact"]["bytes"] == [4.0 * 16 * 16, 4.0 * 32 * 32]


# -- the swappable LM --------------------------------------------------------------------------------------------
def test_every_attention_of_the_lm_is_causal():
    torch.manual_seed(0)
    model = AttentionLM(11, width=16, layers=2, heads=2, context=12).eval()
    model.draw_features(8, gen(35))
    tokens = torch.randint(0, 11, (2, 12), generator=gen(36))
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 11
    for mode in ("softmax", "favor", "linear", "uniform"):
        model.set_attention(mode)
        with torch.no_grad():
            assert torch.allclose(model(tokens)[:, :8], model(changed)[:, :8], atol=1e-6)


def test_favor_with_many_features_approaches_the_softmax_lm_and_uniform_is_average_pooling():
    torch.manual_seed(1)
    model = AttentionLM(7, width=8, layers=1, heads=1, context=6).eval()
    layer = model.attention_layers()[0]
    x = torch.randn(2, 6, 8, generator=gen(37))
    with torch.no_grad():
        exact = layer(x)
        model.draw_features(50_000, gen(38))
        model.set_attention("favor")
        assert (layer(x) - exact).abs().max() < 1e-3   # small init: short q, k, low variance
        model.set_attention("uniform")
        v = layer.qkv(x).split(8, dim=-1)[2]
        pooled = torch.cumsum(v, 1) / torch.arange(1, 7).view(1, 6, 1)
        assert torch.allclose(layer(x), layer.out(pooled), atol=1e-6)
    with pytest.raises(ValueError):
        model.set_attention("sparse")


def test_lm_cannot_switch_to_favor_before_drawing_features_and_training_lowers_the_loss():
    torch.manual_seed(2)
    model = AttentionLM(5, width=16, layers=1, heads=2, context=8)
    with pytest.raises(RuntimeError):
        model.set_attention("favor")
    tokens = torch.tensor([0, 1, 2, 3, 4] * 60)
    windows = random_windows(tokens, 16, 8, gen(39))
    assert windows.shape == (16, 9)
    before = evaluate_loss(model, windows)
    train_steps(model, tokens, 60, batch=16, lr=1e-2, generator=gen(40), device=torch.device("cpu"), warmup=5)
    assert evaluate_loss(model, windows) < before - 1.0


# `pytest -k performer` selects these tests together with the chapter's format checks (a function attribute
# is one of the keywords -k matches)
for _test in [f for name, f in list(globals().items()) if name.startswith("test_")]:
    _test.performer = True
