"""kitlib.decoding and kitlib.language_model against independent computations: filters against a loop over
sorted probabilities, beam search against exhaustive search, batched against one-at-a-time decoding, the
self-terminating layer against its definition in probability space, teacher forcing against step-by-step
decoding. The seq2seq-stop chapter's identities (S2–S7) each get a plausible wrong implementation that their
tolerance catches: eos forced in before the top-k cut (S7), a consistent set that forgets eos (S3, S2), a sampler
that stops with eos's own probability instead of the renormalised one (S2), an ST layer without the factor
1 − ε (S4, S5) and an ST step form that forgets the running product (S6)."""

import itertools
import math

import pytest
import torch

import kitlib.decoding
from kitlib.decoding import (DECODERS, STOCHASTIC, Decoded, beam_search, decode, decoder_options, filter_candidates,
                             geometric_length_gap, greedy, sample, stop_probability)
from kitlib.language_model import LoopLM, RecurrentLM, SelfTerminatingLayer, greedy_stop_bound, st_layer_errors
from kitlib.lm_training import continuation_nll
from kitlib.sentences import length_batches, sentence_data
from kitlib.text import play_sentences


def _nucleus_loop(probs, top_p):
    """Smallest set of highest-probability tokens whose total reaches top_p (one row, plain Python)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= top_p:
            break
    return kept


def test_filter_candidates_matches_loops():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 12, generator=generator, dtype=torch.float64) * 2
    for row in logits:
        probs = row.softmax(0).tolist()
        for k in (1, 3, 12):
            expected = set(sorted(range(12), key=lambda i: -probs[i])[:k])
            assert set(filter_candidates(row, top_k=k).nonzero().flatten().tolist()) == expected
        for p in (0.05, 0.3, 0.9, 1.0):
            assert set(filter_candidates(row, top_p=p).nonzero().flatten().tolist()) == _nucleus_loop(probs, p)
        top3 = sorted(range(12), key=lambda i: -probs[i])[:3]
        renormalised = [probs[i] / sum(probs[j] for j in top3) if i in top3 else 0.0 for i in range(12)]
        both = filter_candidates(row, top_k=3, top_p=0.5).nonzero().flatten().tolist()
        assert set(both) == _nucleus_loop(renormalised, 0.5)
    assert filter_candidates(logits).all()


def test_consistent_filter_is_standard_plus_eos():
    logits = torch.randn(200, 30, generator=torch.Generator().manual_seed(1))
    for options in ({"top_k": 2}, {"top_p": 0.4}, {"top_k": 5, "top_p": 0.3}):
        standard = filter_candidates(logits, **options)
        consistent = filter_candidates(logits, eos_id=29, **options)
        expected = standard.clone()
        expected[:, 29] = True
        assert torch.equal(consistent, expected)


def test_filter_candidates_rejects_bad_arguments():
    with pytest.raises(ValueError, match="top_k"):
        filter_candidates(torch.zeros(5), top_k=6)
    with pytest.raises(ValueError, match="top_p"):
        filter_candidates(torch.zeros(5), top_p=1.5)
    with pytest.raises(ValueError, match="unknown decoder"):
        decode("greedy-ish", LoopLM(), torch.zeros(1, 1, dtype=torch.long), 5)


def _random_lm(seed, vocab=7, hidden=8, cell="rnn", st_epsilon=None, scale=1.0):
    torch.manual_seed(seed)
    model = RecurrentLM(vocab, hidden, layers=2 if cell == "lstm" else 1, cell=cell, st_epsilon=st_epsilon)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("st_epsilon", [None, 0.05])
def test_teacher_forcing_matches_step_by_step(cell, st_epsilon):
    model = _random_lm(0, cell=cell, st_epsilon=st_epsilon, scale=3.0)
    ids = torch.randint(0, 7, (4, 15), generator=torch.Generator().manual_seed(2))
    context = 5
    with torch.no_grad():
        forced = model.continuation_log_probs(ids[:, :-1], context)
        log_probs, state = model.start(ids[:, :context])
        stepped = [log_probs]
        for t in range(context, ids.shape[1] - 1):
            log_probs, state = model.step(ids[:, t], state)
            stepped.append(log_probs)
    torch.testing.assert_close(forced, torch.stack(stepped, 1), atol=1e-5, rtol=1e-5)


def _loop_decode(model, prefixes, max_len, one):
    """Decode one prefix at a time (the Python loop the batched decoders replace)."""
    outs = [one(model, prefixes[i: i + 1], max_len) for i in range(prefixes.shape[0])]
    return (torch.cat([o.tokens for o in outs]), torch.cat([o.lengths for o in outs]),
            torch.cat([o.terminated for o in outs]))


@pytest.mark.parametrize("decoder", [greedy, lambda m, p, n: beam_search(m, p, n, beam_size=3)])
def test_batched_decoding_equals_one_at_a_time(decoder):
    model = _random_lm(3, scale=2.0)
    prefixes = torch.randint(0, 6, (12, 4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        batched = decoder(model, prefixes, 25)
        tokens, lengths, terminated = _loop_decode(model, prefixes, 25, decoder)
    assert torch.equal(batched.tokens, tokens) and torch.equal(batched.lengths, lengths)
    assert torch.equal(batched.terminated, terminated)
    assert 0 < batched.terminated.sum() < 12  # both kinds of rows were exercised
    ended = batched.tokens[batched.terminated, :]
    assert all(row[length - 1] == model.eos_id and (row[length:] == -1).all()
               for row, length in zip(ended, batched.lengths[batched.terminated]))


def test_greedy_and_beam_one_agree_with_a_manual_argmax():
    model = _random_lm(5, scale=2.0)
    prefix = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        log_probs, state = model.start(prefix)
        manual = []
        for _ in range(20):
            token = int(log_probs.argmax())
            manual.append(token)
            if token == model.eos_id:
                break
            log_probs, state = model.step(torch.tensor([token]), state)
        out, beam_one = greedy(model, prefix, 20), beam_search(model, prefix, 20, beam_size=1)
    assert out.tokens[0, : len(manual)].tolist() == manual
    assert torch.equal(out.tokens, beam_one.tokens)


def test_beam_search_with_a_wide_beam_is_exhaustive_search():
    model = _random_lm(6, vocab=4, scale=2.5)  # tokens 0, 1, 2 and eos = 3
    max_len, eos = 4, 3

    def score(prefix, continuation):
        ids = torch.tensor([prefix + continuation])
        return float(model.continuation_log_probs(ids[:, :-1], len(prefix)).gather(-1, ids[:, len(prefix):, None]).sum())

    for seed in range(5):
        prefix = torch.randint(0, 3, (1, 3), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            complete = [list(body) + [eos] for n in range(max_len) for body in itertools.product(range(3), repeat=n)]
            unfinished = [list(body) for body in itertools.product(range(3), repeat=max_len)]
            scored = [(score(prefix[0].tolist(), c), c, True) for c in complete + unfinished]
            scored = [(value, c, c[-1] == eos) for value, c, _ in scored]
            _, best, best_complete = max(scored, key=lambda item: item[0])
            out = beam_search(model, prefix, max_len, beam_size=81)  # 3^4 = 81: nothing is ever pruned
        assert bool(out.terminated[0]) == best_complete
        assert out.tokens[0, : len(best)].tolist() == best


def test_sampling_follows_the_renormalised_filtered_distribution():
    toy = LoopLM(vocab_size=6, favoured_logit=1.0, eos_logit=0.5)
    prefixes = torch.ones(40000, 1, dtype=torch.long)  # after token 1 the favoured token is 0
    logits = toy.logits(prefixes[:1, 0])[0]
    for options in ({}, {"top_k": 2}, {"top_p": 0.5, "consistent": True}):
        out = sample(toy, prefixes, 1, generator=torch.Generator().manual_seed(0), **options)
        keep = filter_candidates(logits, options.get("top_k"), options.get("top_p"),
                                 toy.eos_id if options.get("consistent") else None)
        expected = logits.masked_fill(~keep, -math.inf).softmax(0)
        observed = torch.bincount(out.tokens[:, 0], minlength=6).double() / len(prefixes)
        error = (expected * (1 - expected) / len(prefixes)).sqrt()
        assert ((observed - expected).abs() <= 5 * error + 1e-12).all(), (options, observed, expected)


def test_loop_lm_is_consistent_but_incomplete_decoders_never_stop():
    toy = LoopLM()
    assert toy.eos_probability() == pytest.approx(math.exp(-1) / (math.exp(3) + math.exp(-1) + 18))
    prefixes = torch.zeros(50, 1, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    for name in ("greedy", "beam-2", "top-2", "nucleus-0.4"):
        assert decode(name, toy, prefixes, 200, generator).nontermination_ratio == 1.0
    assert decode("consistent top-2", toy, prefixes, 2000, generator).nontermination_ratio == 0.0
    assert set(DECODERS) >= {"ancestral", "consistent nucleus-0.2"}


def test_survival_curve():
    out = Decoded(torch.zeros(4, 5, dtype=torch.long), torch.tensor([1, 3, 5, 5]),
                  torch.tensor([True, True, True, False]))
    steps, surviving = out.survival()
    assert surviving.tolist() == [1.0, 0.75, 0.75, 0.5, 0.5, 0.25]
    assert out.nontermination_ratio == 0.25


def _st_probabilities_loop(logits, epsilon, eos):
    """The ST layer in probability space, one step at a time, float64."""
    survival, rows = 1.0, []
    for z in logits.double():
        survival *= (1 - epsilon) * torch.sigmoid(z[eos]).item()
        others = torch.cat([z[:eos], z[eos + 1:]]).softmax(0) * survival
        rows.append(torch.cat([others[:eos], torch.tensor([1 - survival]), others[eos:]]))
    return torch.stack(rows)


def test_self_terminating_layer_definition_and_forms_agree():
    generator = torch.Generator().manual_seed(7)
    layer = SelfTerminatingLayer(0.05, eos_id=3)
    logits = torch.randn(6, 40, 9, generator=generator) * 3
    cumulative = layer(logits)
    log_survival, stepped = torch.zeros(6), []
    for t in range(40):
        log_probs, log_survival = layer.step(logits[:, t], log_survival)
        stepped.append(log_probs)
    torch.testing.assert_close(cumulative, torch.stack(stepped, 1), atol=1e-6, rtol=1e-6)
    expected = _st_probabilities_loop(logits[2], 0.05, 3)
    torch.testing.assert_close(cumulative[2].exp().double(), expected, atol=1e-6, rtol=1e-5)
    p_eos = cumulative[..., 3].exp()
    assert torch.allclose(cumulative.exp().sum(-1), torch.ones(6, 40), atol=1e-5)
    assert (p_eos.diff(dim=1) >= -1e-7).all()
    bound = 1 - (1 - 0.05) ** torch.arange(1, 41)
    assert (p_eos >= bound - 1e-6).all()
    with pytest.raises(ValueError, match="epsilon"):
        SelfTerminatingLayer(0.0, 3)


def test_self_terminating_greedy_stops_within_the_bound_and_attains_it():
    epsilon = 0.05
    bound = math.ceil(math.log(0.5) / math.log(1 - epsilon))
    peaked = LoopLM(favoured_logit=30.0, eos_logit=30.0, st_epsilon=epsilon)
    out = greedy(peaked, torch.zeros(1, 1, dtype=torch.long), 10 * bound)
    assert out.terminated.all() and int(out.lengths[0]) == bound
    model = _random_lm(8, st_epsilon=epsilon, scale=4.0)
    with torch.no_grad():
        out = greedy(model, torch.randint(0, 6, (100, 3), generator=torch.Generator().manual_seed(0)), 3 * bound)
    assert out.terminated.all() and int(out.lengths.max()) <= bound


def test_play_sentences_and_sentence_data():
    play = ("# A Play\n\n## ACT I\n\n_Enter A_\n\n**A**  \nO'er the hill, the sun! Who's there?  \n"
            "I am here.\n\n**B**  \n'Tis I.\n")
    sentences = play_sentences(play)
    assert sentences == [["o'er", "the", "hill", ",", "the", "sun", "!"], ["who's", "there", "?"],
                         ["i", "am", "here", "."], ["'", "tis", "i", "."]]
    words = [["w%d" % (i % 5), "x", "y", "z"] + ["a"] * (i % 4) for i in range(40)]
    data = sentence_data(words, vocabulary_size=6, context=3, max_tokens=6, valid_fraction=0.25,
                         generator=torch.Generator().manual_seed(0))
    assert data.vocabulary[:2] == ["<pad>", "<unk>"] and data.vocabulary[-1] == "<eos>"
    assert len(data.vocabulary) == 6
    assert all(3 < len(s) - 1 <= 6 and int(s[-1]) == data.eos_id for s in data.train + data.valid)
    assert data.prefixes("valid", 2).shape == (2, 3)
    with pytest.raises(ValueError, match="no sentence"):
        sentence_data(words, 6, context=10, max_tokens=12, valid_fraction=0.2,
                      generator=torch.Generator().manual_seed(0))


def test_continuation_nll_against_a_loop():
    model = _random_lm(9, scale=1.5)
    sentences = [torch.tensor(s) for s in ([1, 2, 3, 4, 6], [2, 2, 5, 1, 3, 4, 6], [5, 4, 3, 2, 1, 0, 2, 6])]
    with torch.no_grad():
        total, count = 0.0, 0
        for ids, lengths in length_batches(sentences, batch_size=2):
            nll, n = continuation_nll(model, ids, lengths, context=3)
            total, count = total + float(nll), count + n
        expected = 0.0
        for s in sentences:
            log_probs = model.continuation_log_probs(s[None, :-1], 3)[0]
            expected -= float(log_probs.gather(-1, s[3:, None]).sum())
    assert count == sum(len(s) - 3 for s in sentences)
    assert total == pytest.approx(expected, rel=1e-5)


def test_eos_probabilities_match_teacher_forcing():
    from kitlib.decoding import eos_probabilities

    model = _random_lm(10, scale=2.0)
    prefixes = torch.randint(0, 6, (8, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = sample(model, prefixes, 12, generator=torch.Generator().manual_seed(2))
        p_eos = eos_probabilities(model, prefixes, out)
        for row in range(8):
            n = int(out.lengths[row])
            ids = torch.cat([prefixes[row], out.tokens[row, :n]])[None]
            expected = model.continuation_log_probs(ids[:, :-1], 4)[0, :, model.eos_id].exp()
            torch.testing.assert_close(p_eos[row, :n], expected, atol=1e-6, rtol=1e-5)
            assert p_eos[row, n:].isnan().all()


def test_ngram_repetition_and_sequence_log_probs():
    from kitlib.decoding import ngram_repetition
    from kitlib.policy_gradient import sequence_log_probs

    tokens = torch.tensor([[1, 2, 1, 2, 1, 2, 6, -1], [1, 2, 3, 4, 5, 1, 2, 3], [1, 2, 6, -1, -1, -1, -1, -1]])
    out = Decoded(tokens, torch.tensor([7, 8, 3]), torch.tensor([True, False, True]))
    # n = 2: row 0 "1 2 1 2 1 2" has 5 bigrams, 2 distinct; row 1 (never ended) 7 bigrams, 5 distinct
    assert ngram_repetition(out, n=2).tolist() == pytest.approx([1 - 2 / 5, 1 - 5 / 7, 0.0])
    model = _random_lm(11, scale=1.5)
    prefixes = torch.randint(0, 6, (3, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded = sample(model, prefixes, 10, generator=torch.Generator().manual_seed(1))
        scores = sequence_log_probs(model, prefixes, decoded.tokens, decoded.lengths)
        for row in range(3):
            log_probs, state, total = *model.start(prefixes[row: row + 1]), 0.0
            for t in range(int(decoded.lengths[row])):
                token = decoded.tokens[row, t]
                total += float(log_probs[0, token])
                log_probs, state = model.step(token[None], state)
            assert float(scores[row]) == pytest.approx(total, rel=1e-5, abs=1e-5)


def test_policy_gradient_loss_is_the_centred_score_function():
    from kitlib.policy_gradient import policy_gradient_loss, sequence_log_probs

    model = _random_lm(12, scale=1.5)
    prefixes = torch.randint(0, 6, (6, 4), generator=torch.Generator().manual_seed(0))

    def cost(decoded):
        return decoded.lengths.float()

    loss, mean_cost = policy_gradient_loss(model, prefixes, 12, cost, torch.Generator().manual_seed(3))
    decoded = sample(model, prefixes, 12, generator=torch.Generator().manual_seed(3))
    costs = decoded.lengths.float()
    expected = ((costs - costs.mean()) * sequence_log_probs(model, prefixes, decoded.tokens, decoded.lengths)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5) and mean_cost == pytest.approx(float(costs.mean()))
    loss.backward()
    assert model.embed.weight.grad is not None


# --- the chapter's identities, and a plausible wrong implementation that each one catches ----------------------

def _eos_last_topk_filter(logits, top_k=None, top_p=None, eos_id=None):
    """A plausible wrong consistent filter: force eos in by raising its logit before the top-k / nucleus cut,
    so top-k keeps eos and only k − 1 other tokens."""
    if eos_id is not None:
        logits = logits.clone()
        logits[..., eos_id] = math.inf
    return filter_candidates(logits, top_k, top_p)


def test_s7_consistent_set_catches_eos_forced_before_the_cut():
    logits = torch.randn(2000, 50, generator=torch.Generator().manual_seed(0)) * 3
    eos = torch.arange(50) == 49
    for options in ({"top_k": 2}, {"top_k": 4}):
        expected = filter_candidates(logits, **options) | eos
        assert torch.equal(filter_candidates(logits, eos_id=49, **options), expected)
        assert not torch.equal(_eos_last_topk_filter(logits, eos_id=49, **options), expected)


def _bounded_logits(bound, vocab, rows, generator):
    """Random logits in [−B, B] plus rows at the extreme (eos at −B, every other token at +B), eos last."""
    z = (torch.rand(rows, vocab, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    z[: rows // 10] = bound
    z[: rows // 10, -1] = -bound
    return z


def _min_stop_ratio(bound, vocab, names):
    z = _bounded_logits(bound, vocab, 500, torch.Generator().manual_seed(1))
    xi = math.exp(-2 * bound) / vocab
    return min(float(stop_probability(z, vocab - 1, **decoder_options(n)).min()) / xi for n in names)


def test_s3_stop_probability_bound_and_a_filter_that_forgets_eos(monkeypatch):
    consistent = [n for n in DECODERS if n.startswith("consistent")]
    for bound in (0.5, 2.0, 8.0):
        for vocab in (10, 1000):
            assert _min_stop_ratio(bound, vocab, ["ancestral"] + consistent) >= 1.0
            # the bound is nearly attained by ancestral sampling at the extreme rows: ratio V e^{2B}/(1+(V−1)e^{2B})
            tight = vocab * math.exp(2 * bound) / (1 + (vocab - 1) * math.exp(2 * bound))
            assert _min_stop_ratio(bound, vocab, ["ancestral"]) == pytest.approx(tight, rel=1e-9)
    monkeypatch.setattr(kitlib.decoding, "filter_candidates",
                        lambda logits, top_k=None, top_p=None, eos_id=None: filter_candidates(logits, top_k, top_p))
    assert _min_stop_ratio(2.0, 10, consistent) < 1.0


def test_stop_probability_against_a_loop():
    logits = torch.randn(30, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    for name in sorted(STOCHASTIC):
        options = decoder_options(name)
        q = stop_probability(logits, 7, **options)
        for row, value in zip(logits, q):
            probs = row.softmax(0).tolist()
            kept = set(range(8))
            if "top_k" in options:
                kept = set(sorted(range(8), key=lambda i: -probs[i])[: options["top_k"]])
            if "top_p" in options:
                kept = _nucleus_loop(probs, options["top_p"])
            if options.get("consistent"):
                kept.add(7)
            expected = probs[7] / sum(probs[i] for i in kept) if 7 in kept else 0.0
            assert float(value) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="not a sampling decoder"):
        decoder_options("beam-2")


def test_s2_geometric_length_and_a_consistent_sampler_that_does_not_renormalise_eos(monkeypatch):
    toy = LoopLM()
    prefixes = torch.zeros(200, 1, dtype=torch.long)
    z = toy.logits(torch.zeros(1, dtype=torch.long))[0].double()
    q = float(stop_probability(z, toy.eos_id, top_k=2, consistent=True))
    assert 1 / q == pytest.approx(58.3, abs=0.05)  # the reference notes' value
    out = decode("consistent top-2", toy, prefixes, 1500, torch.Generator().manual_seed(0))
    assert out.nontermination_ratio == 0.0 and geometric_length_gap(out, q) <= 4.0

    def wrong_choose(log_probs, generator=torch.Generator().manual_seed(0)):
        """Sample from the standard top-2, then stop with eos's own probability p(eos) (not renormalised)."""
        keep = filter_candidates(log_probs, top_k=2)
        uniform = torch.rand(log_probs.shape, generator=generator, dtype=log_probs.dtype)
        chosen = (log_probs - torch.log(-torch.log(uniform))).masked_fill(~keep, -math.inf).argmax(-1)
        stop = torch.rand(log_probs.shape[0], generator=generator) < log_probs[:, toy.eos_id].exp()
        return torch.where(stop, toy.eos_id, chosen)

    wrong = kitlib.decoding._decode_token_by_token(toy, prefixes, 1500, wrong_choose)
    assert wrong.nontermination_ratio == 0.0 and geometric_length_gap(wrong, q) > 4.0  # mean ≈ 104, not 58
    monkeypatch.setattr(kitlib.decoding, "filter_candidates",
                        lambda logits, top_k=None, top_p=None, eos_id=None: filter_candidates(logits, top_k, top_p))
    forgot = decode("consistent top-2", toy, prefixes, 1500, torch.Generator().manual_seed(0))
    assert forgot.nontermination_ratio == 1.0 and geometric_length_gap(forgot, q) > 4.0


class _NoEpsilonLayer(SelfTerminatingLayer):
    """A plausible wrong ST layer: β_t = σ(z_eos) without the factor (1 − ε)."""

    def _log_beta(self, logits):
        return torch.nn.functional.logsigmoid(logits[..., self.eos_id]).clamp(min=math.log(1e-10))


class _ForgetfulStepLayer(SelfTerminatingLayer):
    """A plausible wrong step form: the running product is not carried over, β_t alone each step."""

    def step(self, logits, log_survival):
        log_beta = self._log_beta(logits)
        return self._assemble(logits, log_beta), log_survival + log_beta


def test_s4_s6_st_layer_errors_and_two_wrong_layers():
    logits = torch.randn(16, 60, 9, generator=torch.Generator().manual_seed(3)) * 3
    logits[:4, :, 8] = 12.0  # rows that want to continue: σ(z_eos) ≈ 1
    right = st_layer_errors(SelfTerminatingLayer(0.05, eos_id=8), logits)
    assert max(right.values()) <= 1e-6
    no_epsilon = st_layer_errors(_NoEpsilonLayer(0.05, eos_id=8), logits)
    assert no_epsilon["bound"] > 0.5  # S4 catches it
    forgetful = st_layer_errors(_ForgetfulStepLayer(0.05, eos_id=8), logits)
    assert forgetful["forms"] > 0.1  # S6 catches it


def test_s5_greedy_stop_bound_and_a_layer_without_epsilon():
    assert [greedy_stop_bound(e) for e in (1e-2, 1e-3, 1e-4, 1e-5)] == [69, 693, 6932, 69315]
    peaked = LoopLM(favoured_logit=40.0, eos_logit=40.0, st_epsilon=1e-2, dtype=torch.float64)
    prefix = torch.zeros(1, 1, dtype=torch.long)
    assert int(greedy(peaked, prefix, 2 * 69).lengths[0]) == 69
    peaked.st = _NoEpsilonLayer(1e-2, peaked.eos_id)
    out = greedy(peaked, prefix, 2 * 69)
    assert not out.terminated.all()  # never stops: S5's "peaked length = m*" fails


def test_decode_prefix_sets_is_decode_on_each_set():
    from kitlib.decoding import decode_prefix_sets

    model = _random_lm(13, scale=2.0)
    sets = {"a": torch.randint(0, 6, (5, 3), generator=torch.Generator().manual_seed(0)),
            "b": torch.randint(0, 6, (4, 3), generator=torch.Generator().manual_seed(1))}
    out = decode_prefix_sets(model, sets, ["greedy", "beam-2"], 15)
    assert set(out) == {(s, n) for s in sets for n in ("greedy", "beam-2")}
    with torch.no_grad():
        for (s, n), decoded in out.items():
            assert torch.equal(decoded.tokens, decode(n, model, sets[s], 15).tokens)
