"""seq2seq-stop, revised (issue 15): the official beam-search stopping rule against a plain-Python reference,
decoding that drops finished rows only every k steps against the every-step loop (S9), the Wilson interval of
S10 against the roots of its defining quadratic, the logit bound of §5 against a loop over the output rows, and
the training loop's per-epoch hook used for the snapshots."""

import math

import numpy as np
import pytest
import torch

from kitlib.decoding import OFFICIAL_BEAM, beam_search, decode, greedy, sample, wilson_interval
from kitlib.language_model import RecurrentLM, recurrent_logit_bound
from kitlib.lm_training import train_recurrent_lm
from kitlib.sentences import sentence_data


def _random_lm(seed, vocab=5, hidden=8, cell="rnn", scale=2.0, st_epsilon=None):
    torch.manual_seed(seed)
    model = RecurrentLM(vocab, hidden, layers=1, cell=cell, st_epsilon=st_epsilon)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


def _official_beam_reference(model, prefix: list, max_len: int, beam_size: int):
    """One prefix, plain Python, scores by teacher forcing: keep the beam_size best continuations; stop at the
    first step at which one of them ends in eos and return the best such one (the official rule)."""
    def log_probs(continuation):
        ids = torch.tensor([prefix + continuation + [0]])
        return model.continuation_log_probs(ids[:, :-1], len(prefix))[0, -1]

    beam = [(0.0, [])]
    for _ in range(max_len):
        candidates = [(score + float(lp), tokens + [v]) for score, tokens in beam
                      for v, lp in enumerate(log_probs(tokens))]
        beam = sorted(candidates, key=lambda c: -c[0])[:beam_size]
        ended = [tokens for _, tokens in beam if tokens[-1] == model.eos_id]
        if ended:
            return ended[0], True
    return beam[0][1], False


@pytest.mark.parametrize("beam_size", [2, 3])
def test_official_beam_rule_matches_a_plain_reference_and_stops_no_later(beam_size):
    for seed in range(4):
        model = _random_lm(seed, scale=1.5 + seed)
        prefixes = torch.randint(0, 4, (10, 3), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            first = beam_search(model, prefixes, 6, beam_size, stop="first")
            best = beam_search(model, prefixes, 6, beam_size)  # the chapter's rule (default)
            for i in range(len(prefixes)):
                tokens, ended = _official_beam_reference(model, prefixes[i].tolist(), 6, beam_size)
                assert bool(first.terminated[i]) == ended
                assert first.tokens[i, : len(tokens)].tolist() == tokens and int(first.lengths[i]) == len(tokens)
        assert bool((first.terminated | ~best.terminated).all())  # "best" stops ⇒ "first" stops
        assert bool((first.lengths[best.terminated] <= best.lengths[best.terminated]).all())
    out = decode("beam-2 (first finished)", model, prefixes, 6)
    assert torch.equal(out.tokens, OFFICIAL_BEAM["beam-2 (first finished)"](model, prefixes, 6).tokens)
    with pytest.raises(ValueError, match="stop"):
        beam_search(model, prefixes, 6, 2, stop="any")


def test_official_rule_differs_from_waiting_for_the_best_hypothesis():
    """A plausible wrong 'official' rule is the chapter's own: on random models the two must disagree somewhere,
    or the comparison in the chapter would be empty."""
    differ = 0
    for seed in range(6):
        model = _random_lm(10 + seed, vocab=6, scale=2.0)
        prefixes = torch.randint(0, 5, (30, 3), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            first, best = (beam_search(model, prefixes, 8, 3, stop=rule) for rule in ("first", "best"))
        differ += int((first.lengths != best.lengths).sum())
    assert differ > 0


@pytest.mark.parametrize("every", [2, 5, 16])
@pytest.mark.parametrize("st_epsilon", [None, 0.2])
def test_compacting_every_k_steps_gives_the_same_greedy_decodes(every, st_epsilon):
    mixed = 0
    for seed in range(8):
        model = _random_lm(seed, vocab=7, scale=2.0, st_epsilon=st_epsilon)
        prefixes = torch.randint(0, 6, (40, 4), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            reference, compacted = greedy(model, prefixes, 30), greedy(model, prefixes, 30, compact_every=every)
        assert torch.equal(reference.tokens, compacted.tokens)
        assert torch.equal(reference.lengths, compacted.lengths)
        assert torch.equal(reference.terminated, compacted.terminated)
        mixed += 0 < int(reference.terminated.sum()) < 40
    assert mixed > 0 or st_epsilon is not None  # rows that stop and rows that do not, in one batch


def test_compacting_sampler_writes_nothing_after_eos():
    model = _random_lm(4, vocab=6, scale=1.0)
    prefixes = torch.randint(0, 5, (200, 3), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = sample(model, prefixes, 40, top_k=3, consistent=True, generator=torch.Generator().manual_seed(0),
                     compact_every=8)
    assert int(out.terminated.sum()) > 100
    for row, length, ended in zip(out.tokens, out.lengths, out.terminated):
        if ended:
            assert int(row[length - 1]) == model.eos_id and bool((row[length:] == -1).all())
            assert not bool((row[: length - 1] == model.eos_id).any())
        else:
            assert bool((row >= 0).all()) and not bool((row == model.eos_id).any())
    with pytest.raises(ValueError, match="compact_every"):
        greedy(model, prefixes, 5, compact_every=0)


def test_wilson_interval_solves_its_quadratic():
    z = 1.96
    for k, n in [(0, 50), (1, 50), (7, 200), (50, 50), (123, 600)]:
        low, high = wilson_interval(k, n, z)
        p = k / n
        roots = np.sort(np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p]).real)  # (p̂−p)² = z² p(1−p)/n
        assert low == pytest.approx(max(0.0, roots[0]), abs=1e-12)
        assert high == pytest.approx(min(1.0, roots[1]), abs=1e-12)
        assert (low > 0) == (k > 0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_recurrent_logit_bound_is_a_bound_and_is_computed_row_by_row(cell):
    model = _random_lm(5, vocab=7, hidden=6, cell=cell, scale=4.0)
    weight, bias = model.out.weight.detach(), model.out.bias.detach()
    by_loop = max(sum(abs(float(w)) for w in weight[v]) + abs(float(bias[v])) for v in range(7))
    bound = recurrent_logit_bound(model)
    assert bound == pytest.approx(by_loop, rel=1e-6)
    ids = torch.randint(0, 7, (64, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        seen = float(model.continuation_logits(ids, 1).abs().max())
    assert seen <= bound
    # an estimate from data is not a bound: it is below the bound here
    assert seen < bound


def test_after_epoch_hook_sees_every_epoch_and_its_perplexity():
    words = [["w%d" % (i % 7), "x", "y", "z", "w%d" % (i % 3)] + ["a"] * (i % 4) for i in range(80)]
    data = sentence_data(words, vocabulary_size=12, context=3, max_tokens=9, valid_fraction=0.2,
                         generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = RecurrentLM(len(data.vocabulary), 8)
    seen = []
    ppl = train_recurrent_lm(model, data, 3, 16, 1e-2, torch.device("cpu"), torch.Generator().manual_seed(0),
                             progress=False, after_epoch=lambda e, m, p: seen.append((e, p, m.training)))
    assert [e for e, _, _ in seen] == [1, 2, 3]
    assert [p for _, p, _ in seen] == ppl and not any(training for _, _, training in seen)
    assert all(math.isfinite(p) for p in ppl)


def test_st_forced_cost_against_a_loop_over_words():
    """S11's yardstick: the closed form against a sum over every word of every sentence; and the cost of a
    real ST layer sitting on its floor (σ(z_eos) = 1) over a uniform softmax, scored token by token."""
    from kitlib.decoding import st_forced_cost
    from kitlib.language_model import SelfTerminatingLayer

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=200).tolist()
    for eps in (1e-3, 1e-2, 0.1):
        nats = sum(-t * math.log(1 - eps) for n in lengths for t in range(1, n))
        assert st_forced_cost(lengths, eps) == pytest.approx(math.exp(nats / sum(lengths)) - 1, rel=1e-12)
    # floor-sitting ST layer: log p(word at step t) − log softmax_{V∖eos}(word) = t ln(1 − ε) exactly
    vocab, eps, n = 6, 0.05, 30
    logits = torch.zeros(1, n, vocab, dtype=torch.float64)
    logits[..., -1] = 60.0  # σ(z_eos) = 1 in float64
    log_p = SelfTerminatingLayer(eps, vocab - 1)(logits)[0]
    extra = -(log_p[: n - 1, 0] - math.log(1 / (vocab - 1))).sum()
    assert float(extra) == pytest.approx(-math.log(1 - eps) * (n - 1) * n / 2, rel=1e-9)
    # a wrong yardstick (steps counted from 0) is off by a visible amount
    wrong = math.expm1(-math.log(1 - 1e-2) * sum((m - 1) * (m - 2) / 2 for m in lengths) / sum(lengths))
    assert abs(wrong - st_forced_cost(lengths, 1e-2)) > 0.05 * st_forced_cost(lengths, 1e-2)
