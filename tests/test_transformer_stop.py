"""seq2seq-stop's Transformer stand-in (kitlib.transformer_stop): the step form used by the decoders equals
teacher forcing, the ST output keeps its guarantees (S4's checks on a Transformer), the sliding window past
``window`` tokens, and training through kitlib.lm_training."""

import math

import pytest
import torch

from kitlib.decoding import greedy
from kitlib.lm_training import perplexity, train_recurrent_lm
from kitlib.sentences import sentence_data
from kitlib.transformer_stop import TransformerSentenceLM


def _model(st_epsilon=None, window=32, seed=0):
    torch.manual_seed(seed)
    return TransformerSentenceLM(12, width=16, layers=2, heads=2, window=window, st_epsilon=st_epsilon).eval()


def _step_log_probs(model, prefixes, continuation):
    """Log-probabilities of every continuation step through start/step (the decoders' path): (B, T + 1, V)."""
    log_probs, state = model.start(prefixes)
    out = [log_probs]
    for t in range(continuation.shape[1]):
        log_probs, state = model.step(continuation[:, t], state)
        out.append(log_probs)
    return torch.stack(out, 1)


@pytest.mark.parametrize("st_epsilon", [None, 0.05])
def test_step_form_equals_teacher_forcing(st_epsilon):
    model = _model(st_epsilon)
    g = torch.Generator().manual_seed(1)
    prefixes, continuation = torch.randint(1, 11, (4, 5), generator=g), torch.randint(1, 11, (4, 7), generator=g)
    with torch.no_grad():
        stepped = _step_log_probs(model, prefixes, continuation)
        forced = model.continuation_log_probs(torch.cat([prefixes, continuation], 1), 5)
    assert stepped.shape == forced.shape == (4, 8, 12)
    assert torch.allclose(stepped, forced, atol=1e-5)


def test_st_output_sums_to_one_and_respects_the_floor():
    epsilon = 0.05
    model = _model(epsilon)
    ids = torch.randint(1, 11, (8, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        p = model.continuation_log_probs(ids, 10).exp()
    t = torch.arange(1, p.shape[1] + 1, dtype=torch.float32)
    p_eos = p[..., model.eos_id]
    assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)
    assert (p_eos[:, 1:] >= p_eos[:, :-1] - 1e-6).all()
    assert (p_eos >= 1 - (1 - epsilon) ** t - 1e-6).all()
    m_star = math.ceil(math.log(0.5) / math.log(1 - epsilon))  # greedy must stop by then, whatever the weights
    assert int(greedy(model, ids[:, :10], m_star + 5).lengths.max()) <= m_star


def test_a_history_longer_than_the_window_is_cut_to_its_last_window_tokens():
    model = _model(window=8)
    history = torch.randint(1, 11, (3, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        log_probs, _ = model.step(history[:, -1], (history[:, :-1], torch.zeros(3)))
        reference = model.body(history[:, -8:])[:, -1].log_softmax(-1)
        whole_prefix_start, _ = model.start(history[:, :8])  # the first window alone: a different answer
    assert torch.allclose(log_probs, reference, atol=1e-6)
    assert not torch.allclose(log_probs, whole_prefix_start, atol=1e-3)
    with pytest.raises(ValueError):
        model.continuation_logits(history, 5)


def test_trains_through_the_recurrent_lm_training_loop():
    words = [f"w{i}" for i in range(8)]
    rng = torch.Generator().manual_seed(4)
    sentences = [[words[int(i)] for i in torch.randint(0, 8, (int(n),), generator=rng)]
                 for n in torch.randint(12, 18, (120,), generator=rng)]
    data = sentence_data(sentences, 20, context=10, max_tokens=20, valid_fraction=0.1, generator=rng)
    torch.manual_seed(0)
    model = TransformerSentenceLM(len(data.vocabulary), width=16, layers=1, heads=2, window=24, st_epsilon=0.01)
    before = perplexity(model, data.valid, data.context, torch.device("cpu"))
    after = train_recurrent_lm(model, data, 3, 16, 3e-3, torch.device("cpu"), torch.Generator().manual_seed(0),
                               progress=False)
    assert all(math.isfinite(x) for x in after) and after[-1] < 0.8 * before
