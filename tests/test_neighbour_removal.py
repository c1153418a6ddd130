"""kitlib.neighbour_removal's selection of removal sets and claim P10's statistic, against loops."""

import math

import torch

from kitlib.neighbour_removal import (geometric_mean, removal_ratios, same_class_random_indices, top_k_indices)


def test_top_k_indices_are_the_largest_similarities():
    similarity = torch.tensor([[0.1, 0.9, 0.5, 0.7], [3.0, -1.0, 2.0, 0.0]])
    chosen = top_k_indices(similarity, 2)
    assert [sorted(c.tolist()) for c in chosen] == [[1, 3], [0, 2]]


def test_same_class_random_indices_stay_in_the_class_without_repeats():
    labels = torch.tensor([0, 1, 1, 0, 1, 2, 1, 0])
    chosen = same_class_random_indices(labels, torch.tensor([1, 0]), 3, torch.Generator().manual_seed(0))
    assert all(labels[c].eq(k).all() for c, k in zip(chosen, (1, 0)))
    assert [len(set(c.tolist())) for c in chosen] == [3, 3]


def test_removal_ratios_match_a_loop():
    """Claim P10: ratio[r, q] = change of ranking r's set for query q at q / mean change of the random sets at q;
    the null divides each random set's change by the mean of the other random sets'."""
    torch.manual_seed(0)
    n_rankings, n_q, n_random = 2, 3, 4
    change = torch.rand(n_rankings * n_q + n_random, n_q, dtype=torch.float64) + 0.1
    ratio, null = removal_ratios(change, n_rankings)
    random = change[n_rankings * n_q:]
    for r in range(n_rankings):
        for q in range(n_q):
            assert math.isclose(ratio[r, q], change[r * n_q + q, q] / random[:, q].mean(), rel_tol=1e-12)
    for s in range(n_random):
        for q in range(n_q):
            rest = [random[t, q] for t in range(n_random) if t != s]
            assert math.isclose(null[s, q], random[s, q] / (sum(rest) / len(rest)), rel_tol=1e-12)
    assert math.isclose(geometric_mean(torch.tensor([1.0, 4.0])), 2.0, rel_tol=1e-12)
    # a set that is a copy of the random sets' mean scores 1
    change[0, 0] = random[:, 0].mean()
    assert math.isclose(removal_ratios(change, n_rankings)[0][0, 0], 1.0, rel_tol=1e-12)


def test_ratios_to_reference_against_a_loop():
    from kitlib.neighbour_removal import ratios_to_reference
    g = torch.Generator().manual_seed(1)
    own, reference = torch.rand(3, 5, generator=g) + 0.1, torch.rand(4, 5, generator=g) + 0.1
    ratio, null = ratios_to_reference(own, reference)
    for q in range(5):
        for r in range(3):
            assert abs(ratio[r, q] - own[r, q] / (sum(reference[d, q] for d in range(4)) / 4)) < 1e-6
        for d in range(4):
            rest = [reference[e, q] for e in range(4) if e != d]
            assert abs(null[d, q] - reference[d, q] / (sum(rest) / 3)) < 1e-6
