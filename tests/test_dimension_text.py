"""kitlib.dimension and kitlib.text against independent computations: the von Mises–Fisher closed form of h_n,
Monte-Carlo, scipy's Beta law, a brute-force entropy, a loop over co-occurrence pairs.

The identities of chapter ``dimension-formula`` (C1-01 … C1-05-rate, C1-09) each have a test below showing that a
plausible wrong implementation — the wrong power of sin θ, a table on the unit sphere, bits instead of nats,
log N instead of log N², a missing tilt — violates the claim's tolerance. The tolerances are read from the
chapter's own claims cell (:func:`chapter_claims` executes it with the quick configuration), not copied."""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import gammaln, ive, logsumexp
from scipy.stats import beta, spearmanr

from kitlib.dimension import (EXACT_CONSTANT, H_N_SLOPE, cos_tail_rate, critical_dim, entropy_approximation,
                              entropy_dimension_grid, exact_entropy_draws, fit_pair_softmax, h_n, jl_min_dim,
                              pair_cross_entropy, pair_cross_entropy_and_grad, pair_softmax_entropy, saturation_dim,
                              similarity_spearman, sphere_vectors, tilted_mean_cos, unigram_pair_cross_entropy)
from kitlib.chapters import chapter_source
from kitlib.dimension_spread import (breakdown_grid, entropy_spread_theory, log_entropy_variance_factor,
                                     row_entropy_draws, spread_breakdown_dim, spread_onset_dim, tilted_cos,
                                     variance_carrier_pairs)
from kitlib.text import (cooccurrence_counts, load_similarity_set, load_wiki_excerpt, shuffle_tokens, stem,
                         top_vocabulary)

GOLDEN_POINT = (math.sqrt(5) - 1) / 2


def chapter_claims(slug="dimension-formula", profile="quick"):
    """The chapter's declared claims, {id: Claim}: its set-up cell up to ``run = kitlib.run.start(`` (imports,
    configuration, PROFILES) and its claims cell are executed, with ``run.claims`` returning the declarations."""
    cells = re.findall(r"```\{code-cell\} ipython3\n(.*?)```", chapter_source(slug).read_text(encoding="utf-8"), re.S)
    code = ["\n".join(line for line in cell.splitlines() if not line.startswith(":")) for cell in cells]
    set_up = next(c for c in code if "kitlib.run.start(" in c).split("run = kitlib.run.start(")[0]
    namespace = {"__name__": f"chapter_{slug.replace('-', '_')}"}
    exec(compile(set_up, f"{slug}: set-up cell", "exec"), namespace)
    namespace.update(cfg=namespace["PROFILES"][profile],
                     run=SimpleNamespace(claims=lambda declared: {c.id: c for c in declared}))
    exec(compile(next(c for c in code if "run.claims(" in c), f"{slug}: claims cell", "exec"), namespace)
    return namespace["claims"]


CLAIMS = chapter_claims()


def bound(claim_id, component=None):
    """The chapter's bound for a claim (or for one component of a compound claim)."""
    bounds = CLAIMS[claim_id].bounds
    return bounds[component] if component else bounds


def h_n_closed_form(n):
    """log E[e^{n cos θ}] − n I_{n/2}(n)/I_{n/2−1}(n), the von Mises–Fisher normaliser and mean length."""
    nu = n / 2 - 1
    return gammaln(nu + 1) + nu * math.log(2 / n) + math.log(ive(nu, n)) + n - n * ive(nu + 1, n) / ive(nu, n)


@pytest.mark.parametrize("n", [2, 3, 7, 64, 300, 1024, 2048])
def test_h_n_matches_the_bessel_closed_form(n):
    assert h_n(n) == pytest.approx(h_n_closed_form(n), rel=1e-4)


def test_h_n_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    n = 6
    u, v = sphere_vectors(400_000, n, gen), sphere_vectors(400_000, n, gen)
    s = (u * v).sum(1)
    w = torch.exp(s - s.max())
    estimate = (torch.log(w.mean()) + s.max() - (w * s).sum() / w.sum()).item()
    assert estimate == pytest.approx(h_n(n), abs=0.02)
    with pytest.raises(ValueError):
        h_n(1)


def test_golden_ratio_constants_and_limits():
    phi = (1 + math.sqrt(5)) / 2
    assert H_N_SLOPE == pytest.approx(math.log(math.sin(math.acos(1 / phi))))   # log sin θ*, cos θ* = 1/φ
    assert EXACT_CONSTANT == pytest.approx(8.3123, abs=1e-4)
    assert h_n(4096) / 4096 == pytest.approx(H_N_SLOPE, rel=2e-3)
    assert tilted_mean_cos(4096) == pytest.approx((math.sqrt(5) - 1) / 2, abs=5e-3)


def test_tilted_mean_is_the_bessel_ratio():
    n = 50
    assert tilted_mean_cos(n) == pytest.approx(ive(n / 2, n) / ive(n / 2 - 1, n), rel=1e-6)


def test_cos_tail_rate_against_monte_carlo():
    gen = torch.Generator().manual_seed(1)
    n, c = 12, 0.5
    u, v = sphere_vectors(200_000, n, gen), sphere_vectors(200_000, n, gen)
    p = ((u * v).sum(1) / n > c).double().mean().item()
    assert cos_tail_rate(n, c) == pytest.approx(-math.log(p) / n, rel=0.02)


def test_critical_dim_is_the_root():
    for N, expected in ((1e3, 57.1), (1e5, 95.4), (5e6, 127.9)):
        root = critical_dim(N)
        assert root == pytest.approx(expected, abs=0.1)
        assert abs(entropy_approximation(N, root)) < 1e-6


def test_pair_softmax_entropy_equals_the_direct_formula():
    gen = torch.Generator().manual_seed(2)
    u, v = sphere_vectors(70, 5, gen), sphere_vectors(90, 5, gen)
    p = torch.softmax((u @ v.T).flatten(), 0)
    direct = -(p * p.log()).sum().item()
    assert pair_softmax_entropy(u, v, block=16) == pytest.approx(direct, rel=1e-10)
    assert (sphere_vectors(10, 9, gen).norm(dim=1) - 3).abs().max() < 1e-12


def test_pair_cross_entropy_and_fit():
    gen = torch.Generator().manual_seed(3)
    u, v = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen)
    target = torch.rand(6, 6, generator=gen)
    target /= target.sum()
    log_p = torch.log_softmax((u @ v.T).flatten(), 0).view(6, 6)
    assert pair_cross_entropy(u, v, target).item() == pytest.approx(-(target * log_p).sum().item(), rel=1e-6)
    # with enough dimensions the fit approaches the target's own entropy (the minimum of the cross-entropy)
    entropy = -(target * target.log()).sum().item()
    _, _, history = fit_pair_softmax(target.double(), 6, steps=400, lr=0.1, generator=gen)
    assert history["train"][-1] < history["train"][0]
    assert history["train"][-1] == pytest.approx(entropy, abs=0.02)


def test_closed_form_gradient_matches_autograd():
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.rand(7, 7, generator=gen, dtype=torch.float64)
    target /= target.sum()
    loss = pair_cross_entropy(u, v, target)
    loss.backward()
    with torch.no_grad():
        got, grad_u, grad_v = pair_cross_entropy_and_grad(u, v, target)
    assert got.item() == pytest.approx(loss.item(), rel=1e-12)
    assert torch.allclose(grad_u, u.grad, rtol=1e-10) and torch.allclose(grad_v, v.grad, rtol=1e-10)


def test_jl_min_dim_preserves_distances():
    gen = torch.Generator().manual_seed(4)
    points = torch.randn(30, 500, generator=gen, dtype=torch.float64)
    k = jl_min_dim(points, 0.5, gen, candidates=[4, 32, 128, 256, 500])
    assert k in (32, 128, 256, 500)
    assert jl_min_dim(points, 1e-6, gen, candidates=[2, 4]) == -1


def test_cooccurrence_counts_match_a_loop():
    docs = [["a", "b", "c", "a", "x"], ["b", "b", "c"]]
    vocabulary = {"a": 0, "b": 1, "c": 2}
    counts = cooccurrence_counts(docs, vocabulary, window=2)
    expected = np.zeros((3, 3))
    for doc in docs:
        ids = [vocabulary[t] for t in doc if t in vocabulary]
        for i, a in enumerate(ids):
            for j, b in enumerate(ids):
                if i != j and abs(i - j) <= 2:
                    expected[a, b] += 1
    np.testing.assert_array_equal(counts.numpy(), expected)


def test_shipped_corpus_and_similarity_sets():
    docs = load_wiki_excerpt()
    assert len(docs) == 250 and sum(map(len, docs)) > 300_000
    vocabulary = top_vocabulary(docs, 50)
    assert len(vocabulary) == 50 and min(vocabulary.values()) == 0
    rows = load_similarity_set("wordsim353")
    assert len(rows) == 353 and rows[0] == ("love", "sex", 6.77)
    assert len(load_similarity_set("simlex999")) == 999
    assert stem("Dictionary") == "dictionari"
    with pytest.raises(ValueError, match="wordsim353"):
        load_similarity_set("men")


# -- the identities of the chapter, and a plausible wrong implementation of each that its tolerance rejects -----
def h_n_variant(n, power=lambda n: n - 2, scale=lambda n: n, nats_per_unit=1.0, points=20_001):
    """h_n written out again with knobs for slips: the power of sin θ in the angle density (n − 2 is right),
    the score s = scale(n) · cos θ (n: both tables on the sphere of radius √n), the unit (nats: 1; bits: log 2)."""
    theta = np.linspace(0.0, math.pi, points)[1:-1]
    log_density = power(n) * np.log(np.sin(theta))
    s = scale(n) * np.cos(theta)
    log_tilted = log_density + s
    tilted = np.exp(log_tilted - logsumexp(log_tilted))
    return float(logsumexp(log_tilted) - logsumexp(log_density) - (tilted * s).sum()) / nats_per_unit


DIMS = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]       # the chapter's grid


def fitted_slope(h):
    fit_dims = np.arange(50, 1001, 25)
    return np.polyfit(fit_dims, [h(n) for n in fit_dims], 1)[0]


def test_the_variant_harness_is_h_n_when_nothing_is_wrong():
    for n in (4, 64, 1024):
        assert h_n_variant(n) == pytest.approx(h_n(n), rel=1e-12)


def test_c1_09_wrong_power_of_sin_misses_the_bessel_form():
    right = max(abs(h_n(n) / h_n_closed_form(n) - 1) for n in DIMS)
    wrong = max(abs(h_n_variant(n, power=lambda n: n - 1) / h_n_closed_form(n) - 1) for n in DIMS)
    assert bound("C1-09").holds(right) and not bound("C1-09").holds(wrong)


def test_c1_02_a_table_on_the_unit_sphere_misses_the_laplace_limit():
    def gap(h):
        return max(abs(h(n) / n / H_N_SLOPE - 1) for n in DIMS if n >= 256)

    assert bound("C1-02", "gap n≥256").holds(gap(h_n))
    assert not bound("C1-02", "gap n≥256").holds(gap(lambda n: h_n_variant(n, scale=math.sqrt)))   # s = √n cos θ


def test_c1_03_slope_and_constant_in_bits_miss():
    right, bits = fitted_slope(h_n), fitted_slope(lambda n: h_n_variant(n, nats_per_unit=math.log(2)))
    assert bound("C1-03").holds(right) and not bound("C1-03").holds(bits)
    assert bound("C1-03-constant").holds(2 / -right) and not bound("C1-03-constant").holds(2 / -bits)


def test_c1_04_one_table_log_n_instead_of_log_n_squared_misses():
    low, high = bound("C1-04", "min").low, bound("C1-04", "max").high
    for N in (1e3, 1e5, 5e6):
        assert low <= critical_dim(N) / math.log(N) <= high
        wrong = brentq(lambda n: math.log(N) + h_n(n), 2.0, 20 * math.log(N) + 50)
        assert not low <= wrong / math.log(N) <= high


def test_c1_05_untilted_mean_and_unmapped_beta_tail_miss():
    theta = np.linspace(0.0, math.pi, 20_001)[1:-1]
    log_density = 510 * np.log(np.sin(theta))                  # n = 512, without the e^s tilt
    untilted = float((np.exp(log_density - logsumexp(log_density)) * np.cos(theta)).sum())
    assert bound("C1-05").holds(tilted_mean_cos(512)) and not bound("C1-05").holds(untilted)
    n, a = 2000, 1999 / 2
    unmapped = -beta.logsf(GOLDEN_POINT, a, a) / n                # P(Beta > c) instead of P(Beta > (1 + c)/2)
    assert bound("C1-05-rate").holds(cos_tail_rate(n)) and not bound("C1-05-rate").holds(unmapped)


def test_c1_01_the_post_uses_natural_logarithms():
    for N, name in ((1e5, "N = 1e5"), (5e6, "N = 5e6"), (512, "N = 512")):
        assert bound("C1-01", name).holds(8.33 * math.log(N))
        assert not bound("C1-01", name).holds(8.33 * math.log10(N))
        assert not bound("C1-01", name).holds(8.33 * math.log2(N))


def test_c1_06_entropy_in_bits_or_without_h_n_misses_the_tolerance():
    gen = torch.Generator().manual_seed(5)
    N, n = 1000, 8                                              # n ≤ 3 log N: where the approximation holds
    exact = float(exact_entropy_draws(N, n, 1, gen)[0])
    approx = entropy_approximation(N, n)
    assert bound("C1-06").holds(abs(exact / approx - 1))
    assert not bound("C1-06").holds(abs(exact / math.log(2) / approx - 1))       # bits
    assert not bound("C1-06").holds(abs(exact / (2 * math.log(N)) - 1))         # the null: uniform pairs


def test_c1_07_a_projection_scaled_by_1_over_k_never_preserves_distances():
    gen = torch.Generator().manual_seed(6)
    points = torch.randn(50, 400, generator=gen, dtype=torch.float64)
    d2 = torch.pdist(points).pow(2)
    k = jl_min_dim(points, 0.3, gen, candidates=list(range(16, 401, 16)))
    assert 0 < k < 24 * math.log(50) / 0.3**2 * 0.5
    for k in range(16, 401, 16):                                 # A ~ N(0, 1/k²): squared distances shrink by k
        a = torch.randn(400, k, generator=gen, dtype=torch.float64) / k
        ratio = torch.pdist(points @ a).pow(2) / d2
        assert ratio.min() < 0.7 or ratio.max() > 1.3


# -- helpers of the chapter's brute force and real-text sections -------------------------------------------------
def test_entropy_grid_and_draws():
    grid = entropy_dimension_grid(1000)
    assert grid == sorted(set(grid)) and grid[0] == 4
    assert int(round(critical_dim(1000))) in grid and int(2 * critical_dim(1000)) in grid
    draws = exact_entropy_draws(200, 6, 3, torch.Generator().manual_seed(7))
    assert draws.shape == (3,) and np.all((draws > 0) & (draws <= 2 * math.log(200)))


def test_unigram_pair_cross_entropy_matches_a_loop():
    gen = torch.Generator().manual_seed(8)
    counts = torch.randint(0, 5, (4, 4), generator=gen).double()
    target = torch.rand(4, 4, generator=gen, dtype=torch.float64)
    target /= target.sum()
    q = (counts.sum(1) + 0.5) / (counts.sum() + 2.0)
    expected = -sum(target[i, j] * math.log(q[i] * q[j]) for i in range(4) for j in range(4))
    assert unigram_pair_cross_entropy(counts, target) == pytest.approx(float(expected), rel=1e-12)


def test_similarity_spearman_matches_scipy_on_cosines():
    gen = torch.Generator().manual_seed(9)
    vectors = torch.randn(10, 3, generator=gen)
    rows = [(0, 1, 3.0), (2, 3, 1.0), (4, 5, 2.5), (6, 7, 0.5), (8, 9, 4.0)]
    cosines = [float(torch.nn.functional.cosine_similarity(vectors[i], vectors[j], dim=0)) for i, j, _ in rows]
    expected = spearmanr(cosines, [s for *_, s in rows]).statistic
    assert similarity_spearman(vectors, rows) == pytest.approx(expected)


def test_saturation_dim_and_shuffled_tokens():
    assert saturation_dim([4, 8, 16, 32], [3.0, 2.5, 2.405, 2.4]) == 16
    assert saturation_dim([4, 8, 16, 32], [3.0, 2.5, 2.405, 2.4], tol=0.001) == 32
    docs = [["a", "b", "c"], ["d", "e"], ["f"]]
    shuffled = shuffle_tokens(docs, np.random.default_rng(0))
    assert [len(d) for d in shuffled] == [3, 2, 1]
    assert sorted(t for d in shuffled for t in d) == list("abcdef")


def test_chapter_claims_are_read_from_the_chapter():
    assert {"C1-01", "C1-06", "C1-10", "C1-11"} <= set(CLAIMS)
    assert bound("C1-09").high == 1e-9 and bound("C1-06").high == 0.01
    # C1-10 is centred on the delta-method slope over the quick profile's sizes
    sizes = (100, 300, 1000, 3000)
    slope = np.polyfit(np.log(sizes), [spread_onset_dim(N) for N in sizes], 1)[0]
    assert bound("C1-10", "slope").holds(slope) and not bound("C1-10", "slope").holds(EXACT_CONSTANT)


# -- the spread of the exact entropy over draws (chapter §3, C1-10) ----------------------------------------------
def test_variance_factor_matches_the_von_mises_fisher_moments():
    """E[e^{κ cos θ}] = Γ(ν+1)(2/κ)^ν I_ν(κ), tilted mean A = I_{ν+1}/I_ν, tilted E[cos²] = 1 − (n−1) A/κ."""
    for n in (6, 20, 60):
        nu = n / 2 - 1

        def log_mgf(kappa):
            return gammaln(nu + 1) + nu * math.log(2 / kappa) + math.log(ive(nu, kappa)) + kappa

        def moments(kappa):
            a = ive(nu + 1, kappa) / ive(nu, kappa)
            return a, 1 - (n - 1) * a / kappa
        m = n * moments(n)[0]
        c1, c2 = moments(2 * n)
        second = (1 + m) ** 2 - 2 * (1 + m) * n * c1 + n**2 * c2     # E_2n[(1 + m − s)²], s = n cos θ
        expected = math.log(math.exp(log_mgf(2 * n) - 2 * log_mgf(n)) * second - 1)
        assert log_entropy_variance_factor(n) == pytest.approx(expected, rel=1e-6)


def test_spread_theory_matches_the_draws_where_fluctuations_are_small():
    gen = torch.Generator().manual_seed(10)
    N = 200
    for n in (4, 14):                                           # sd 0.005 and 0.09 nats: the delta method applies
        draws = exact_entropy_draws(N, n, 300, gen)
        assert draws.std(ddof=1) == pytest.approx(entropy_spread_theory(N, n), rel=0.15)
        # dropping the (1 + m − s)² weight — the spread of log Z, not of H — misses it by 40–80 %
        nu = n / 2 - 1
        log_mgf = [gammaln(nu + 1) + nu * math.log(2 / k) + math.log(ive(nu, k)) + k for k in (n, 2 * n)]
        log_z_spread = math.sqrt(math.expm1(log_mgf[1] - 2 * log_mgf[0])) / N
        assert draws.std(ddof=1) != pytest.approx(log_z_spread, rel=0.15)


def test_breakdown_dim_solves_an_exponential_spread_exactly():
    dims = np.array([10, 12, 14, 16])
    spreads = 0.02 * np.exp(0.3 * (dims - 10))
    assert spread_breakdown_dim(dims, spreads, tau=0.1) == pytest.approx(10 + math.log(5) / 0.3)
    assert math.isnan(spread_breakdown_dim(dims, spreads[::-1]))
    N = 1000
    onset = spread_onset_dim(N)
    assert entropy_spread_theory(N, onset) == pytest.approx(0.1, rel=1e-6)
    assert breakdown_grid(N) == list(range(round(onset) - 4, round(onset) + 5, 2))
    with pytest.raises(ValueError):
        log_entropy_variance_factor(1)


def test_float32_entropies_agree_with_float64_to_the_chapters_precision():
    """§3 draws in float32: on the same vectors the entropy moves by far less than C1-06's 1 % or C1-10's 0.1 nat."""
    gen = torch.Generator().manual_seed(11)
    for n in (8, 60):
        u, v = sphere_vectors(1500, n, gen), sphere_vectors(1500, n, gen)
        exact = pair_softmax_entropy(u, v)
        assert pair_softmax_entropy(u.float(), v.float(), block=512) == pytest.approx(exact, rel=1e-4, abs=1e-4)


def test_tilted_cos_is_the_bessel_ratio_and_carrier_pairs_match_monte_carlo():
    """e^{2s}-tilted mean of cos θ = I_{ν+1}(2n)/I_ν(2n); N² P(cos θ > c₂) against counted random pairs."""
    for n in (8, 30, 200):
        nu = n / 2 - 1
        assert tilted_cos(n) == pytest.approx(ive(nu + 1, 2 * n) / ive(nu, 2 * n), rel=1e-8)
    assert tilted_cos(4000) == pytest.approx((math.sqrt(17) - 1) / 4, abs=2e-3)
    gen = torch.Generator().manual_seed(12)
    n, N = 6, 1000
    u, v = sphere_vectors(N, n, gen), sphere_vectors(N, n, gen)
    counted = float(((u @ v.T) / n > tilted_cos(n)).sum())
    expected = variance_carrier_pairs(N, n)
    assert counted == pytest.approx(expected, rel=5 / math.sqrt(expected))
    assert variance_carrier_pairs(1e4, spread_onset_dim(1e4)) > 1 > variance_carrier_pairs(1e6, spread_onset_dim(1e6))


def test_row_entropy_draws_match_a_loop_and_their_spread_scales_like_one_over_root_n():
    gen = torch.Generator().manual_seed(13)
    got = row_entropy_draws(50, 5, 3, gen)
    gen = torch.Generator().manual_seed(13)
    u, v = sphere_vectors(3, 5, gen), sphere_vectors(150, 5, gen).reshape(3, 50, 5)
    for d in range(3):
        s = np.array([float(u[d] @ v[d, j]) for j in range(50)])
        p = np.exp(s - logsumexp(s))
        assert got[d] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-10)
    # one row has N terms: its delta-method spread is that of the N × N entropy at √N words
    draws = row_entropy_draws(400, 4, 2000, torch.Generator().manual_seed(14))
    assert draws.std(ddof=1) == pytest.approx(entropy_spread_theory(20, 4), rel=0.1)
