"""kitlib.dimension and kitlib.text against independent computations: the von Mises–Fisher closed form of h_n,
Monte-Carlo, scipy's Beta law, a brute-force entropy, a loop over co-occurrence pairs."""

import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln, ive

from kitlib.dimension import (EXACT_CONSTANT, H_N_SLOPE, cos_tail_rate, critical_dim, entropy_approximation,
                              fit_pair_softmax, h_n, jl_min_dim, pair_cross_entropy, pair_softmax_entropy,
                              sphere_vectors, tilted_mean_cos)
from kitlib.text import cooccurrence_counts, load_similarity_set, load_wiki_excerpt, stem, top_vocabulary


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
