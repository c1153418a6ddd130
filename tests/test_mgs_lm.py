"""kitlib.mgs_lm and the official PG of kitlib.policy_gradient against independent loops written from the
official code's semantics (wellecks/mgs: guided/utils.py task_distance and max_length, guided/metrics.py
ngram_metrics, pg/utils.py AvgBaseline and pg_loss)."""

import math

import pytest
import torch

from kitlib.decoding import Decoded, greedy, sample
from kitlib.language_model import LoopLM, RecurrentLM
from kitlib.mgs_lm import batch_decode_cap, evaluate_termination, lm_task_loss, repeat4
from kitlib.policy_gradient import MovingAverageBaseline, official_pg_loss


def _decoded(rows, eos, max_len):
    """Decoded from token lists; a row containing eos is cut after it."""
    tokens = torch.full((len(rows), max_len), -1, dtype=torch.long)
    lengths, terminated = [], []
    for i, row in enumerate(rows):
        row = row[: row.index(eos) + 1] if eos in row else row[:max_len]
        tokens[i, : len(row)] = torch.tensor(row)
        lengths.append(len(row))
        terminated.append(eos in row)
    return Decoded(tokens, torch.tensor(lengths), torch.tensor(terminated))


def test_batch_decode_cap_is_the_official_max_length_minus_the_context():
    """Official: target = batch[:, 1:] (longest row first), eos index in it + 2, times 1.3, floored, ≤ 1000;
    the decoder's max_length counts the context."""
    context, eos = 10, 99
    for lengths in ([12, 25, 40], [11], [60, 59]):
        longest = max(lengths)
        row = list(range(longest - 1)) + [eos]  # the longest sentence, context and eos included
        target = row[1:]
        official_total = min(1000, max(1, int(1.3 * (target.index(eos) + 2))))
        assert batch_decode_cap(torch.tensor(lengths), context) == official_total - context
    # a per-sentence cap (the chapter's former semantics) would give the short sentence far fewer tokens
    assert batch_decode_cap([12, 40], context) == int(1.3 * 40) - 10 > math.ceil(1.3 * (12 - 10))


def test_repeat4_counts_eos_and_scores_short_continuations_one_or_leaves_them_out():
    eos = 9
    rows = [[1, 2, 3, 1, 2, 3, 1, 2, 3, eos], [1, 2, eos], [4, 4, 4, 4, 4, 4], [1, 2, 3, eos]]
    decoded = _decoded(rows, eos, 12)

    def official(tokens):  # task_distance 'repeat-4' with nltk's ngrams and a Counter
        if len(tokens) < 4:
            return 1.0
        grams = [tuple(tokens[i: i + 4]) for i in range(len(tokens) - 3)]
        return 1.0 - len(set(grams)) / len(grams)

    expected = [official(r[: r.index(eos) + 1] if eos in r else r) for r in rows]
    assert repeat4(decoded).tolist() == pytest.approx(expected)
    assert expected[0] == pytest.approx(1 - 4 / 7)  # 7 4-grams with eos, of which 4 distinct
    evaluation = repeat4(decoded, short=None)
    assert math.isnan(evaluation[1]) and evaluation[3] == 0.0  # [1, 2, 3, eos] is one 4-gram
    # the wrong semantics the chapter used before: eos excluded, short = 0
    wrong = [0.0 if len(r) < 5 else 1 - len({tuple(r[i: i + 4]) for i in range(len(r) - 4)}) / (len(r) - 4)
             for r in rows]
    assert wrong[1] == 0.0 != repeat4(decoded)[1]


def test_lm_task_loss_is_the_frozen_models_summed_nll_up_to_and_including_eos():
    torch.manual_seed(0)
    model = RecurrentLM(12, 8).eval()
    prefixes = torch.randint(0, 11, (5, 4))
    decoded = sample(model, prefixes, 9, generator=torch.Generator().manual_seed(1))
    loss = lm_task_loss(model, prefixes, decoded)
    for b in range(5):  # one token at a time through the decoder interface
        log_probs, state = model.start(prefixes[b: b + 1])
        total = 0.0
        for t in range(int(decoded.lengths[b])):
            token = decoded.tokens[b, t: t + 1]
            total -= float(log_probs[0, token].detach())
            log_probs, state = model.step(token, state)
        assert float(loss[b]) == pytest.approx(total, rel=1e-5)


def test_evaluate_termination_counts_decodes_without_eos_within_500_tokens():
    loop = LoopLM(vocab_size=6, favoured_logit=3.0, eos_logit=-1.0)  # greedy never emits eos
    prefixes = torch.zeros(7, 10, dtype=torch.long)
    result = evaluate_termination(loop, prefixes)
    assert result["non-terminated"] == 7 and result["length"] == 490  # 500 tokens with the context
    assert result["repeat-4"] == pytest.approx(1 - 2 / 487)  # 0 1 0 1 ...: two distinct 4-grams
    stopping = LoopLM(vocab_size=6, favoured_logit=-5.0, eos_logit=5.0)  # greedy stops at once
    result = evaluate_termination(stopping, prefixes)
    assert result["non-terminated"] == 0 and result["repeat-4 scored"] == 0 and result["repeat-4 (task form)"] == 1
    # nothing to score: NaN, as the official np.mean([]); a 0.0 here would read as "no repetition at all"
    assert math.isnan(result["repeat-4"])


def test_moving_average_baseline_weighs_the_current_batch_095():
    baseline = MovingAverageBaseline()
    assert baseline.update(torch.tensor([1.0, 3.0])) == pytest.approx(0.95 * 2.0)
    assert baseline.update(torch.tensor([0.0])) == pytest.approx(0.05 * 0.95 * 2.0)


def test_official_pg_loss_against_a_loop_over_prefixes_and_samples():
    torch.manual_seed(0)
    model = RecurrentLM(12, 8).eval()
    prefixes = torch.randint(0, 11, (3, 4))

    def cost(p, d):
        return d.lengths.float() + 1.0

    baseline = MovingAverageBaseline()
    baseline.value = 0.3
    loss, mean_cost = official_pg_loss(model, prefixes, 9, cost, baseline, samples=2,
                                       generator=torch.Generator().manual_seed(4))
    decoded = sample(model, prefixes.repeat_interleave(2, 0), 9, generator=torch.Generator().manual_seed(4))
    costs = decoded.lengths.float() + 1.0
    rewards = -costs / costs.max()
    b = 0.05 * 0.3 + 0.95 * float(rewards.mean())
    expected = 0.0
    for i in range(6):
        log_probs, state = model.start(prefixes[i // 2: i // 2 + 1])
        score = 0.0
        for t in range(int(decoded.lengths[i])):
            token = decoded.tokens[i, t: t + 1]
            score = score + float(log_probs[0, token].detach())
            log_probs, state = model.step(token, state)
        expected = expected - (float(rewards[i]) - b) * score / int(decoded.lengths[i]) / 3
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)
    assert mean_cost == pytest.approx(float(costs.mean()))
    assert baseline.value == pytest.approx(b)


def test_greedy_decode_of_the_cap_matches_decoding_each_batch_to_one_cap():
    torch.manual_seed(1)
    model = RecurrentLM(12, 8).eval()
    prefixes = torch.randint(0, 11, (4, 3))
    cap = batch_decode_cap([5, 9, 7, 6], 3)
    decoded = greedy(model, prefixes, cap)
    assert decoded.tokens.shape == (4, cap) and int(decoded.lengths.max()) <= cap
