"""Plausible wrong answers to the seq2seq-stop exercises (tests/test_exercises.py runs each against its check)."""

import torch


def _nucleus_cumsum_including_token(logits, top_p, eos_id=None):
    """Keeps a token while the cumulative mass *including* it is below top_p: the crossing token is dropped."""
    sorted_probs, order = logits.softmax(-1).sort(dim=-1, descending=True)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, sorted_probs.cumsum(-1) < top_p)
    if eos_id is not None:
        keep[..., eos_id] = True
    return keep


def _nucleus_unsorted(logits, top_p, eos_id=None):
    """Accumulates the mass in vocabulary order instead of decreasing probability."""
    probs = logits.softmax(-1)
    keep = probs.cumsum(-1) - probs < top_p
    if eos_id is not None:
        keep[..., eos_id] = True
    return keep


def _nucleus_eos_ignored(logits, top_p, eos_id=None):
    """The consistent variant forgotten: eos_id is ignored."""
    sorted_probs, order = logits.softmax(-1).sort(dim=-1, descending=True)
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, sorted_probs.cumsum(-1) - sorted_probs < top_p)


def _top_k_mask(logits, k):
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(k, dim=-1).indices, True)


def _stop_not_renormalised(logits, eos_id, k, consistent):
    """eos's own probability p(eos) when eos is a candidate, not renormalised over the candidate set."""
    keep = _top_k_mask(logits, k)
    if consistent:
        keep[..., eos_id] = True
    return logits.softmax(-1)[..., eos_id] * keep[..., eos_id]


def _stop_eos_forced_before_cut(logits, eos_id, k, consistent):
    """Consistent set built by forcing eos in before the top-k cut: only k − 1 other tokens survive."""
    if consistent:
        forced = logits.clone()
        forced[..., eos_id] = torch.inf
        keep = _top_k_mask(forced, k)
    else:
        keep = _top_k_mask(logits, k)
    kept = logits.softmax(-1) * keep
    return kept[..., eos_id] / kept.sum(-1)


def _st_without_one_minus_epsilon(logits, eos_id, epsilon):
    """β_t = σ(z_eos) without the factor 1 − ε (no floor on p(eos))."""
    survival = torch.cumprod(torch.sigmoid(logits[..., eos_id]), -1)
    is_eos = torch.arange(logits.shape[-1]) == eos_id
    others = logits.masked_fill(is_eos, -torch.inf).softmax(-1)
    return torch.where(is_eos, (1 - survival)[..., None], survival[..., None] * others)


def _st_no_running_product(logits, eos_id, epsilon):
    """β_t of the current step alone instead of the product over i ≤ t (the step form that forgets the product)."""
    beta = (1 - epsilon) * torch.sigmoid(logits[..., eos_id])
    is_eos = torch.arange(logits.shape[-1]) == eos_id
    others = logits.masked_fill(is_eos, -torch.inf).softmax(-1)
    return torch.where(is_eos, (1 - beta)[..., None], beta[..., None] * others)


def _st_softmax_over_all_tokens(logits, eos_id, epsilon):
    """The other tokens share a softmax over all V tokens, eos included (rows no longer sum to 1)."""
    survival = torch.cumprod((1 - epsilon) * torch.sigmoid(logits[..., eos_id]), -1)
    is_eos = torch.arange(logits.shape[-1]) == eos_id
    return torch.where(is_eos, (1 - survival)[..., None], survival[..., None] * logits.softmax(-1))


def _st_product_before_t(logits, eos_id, epsilon):
    """The product over i < t instead of i ≤ t: the floor starts one step late (p(eos) = 0 at t = 1)."""
    beta = (1 - epsilon) * torch.sigmoid(logits[..., eos_id])
    survival = torch.cumprod(torch.cat([torch.ones_like(beta[..., :1]), beta[..., :-1]], -1), -1)
    is_eos = torch.arange(logits.shape[-1]) == eos_id
    others = logits.masked_fill(is_eos, -torch.inf).softmax(-1)
    return torch.where(is_eos, (1 - survival)[..., None], survival[..., None] * others)


WRONG_ANSWERS = {
    "seq2seq-ex-nucleus": {"crossing token dropped": _nucleus_cumsum_including_token,
                           "unsorted": _nucleus_unsorted, "eos ignored": _nucleus_eos_ignored},
    "seq2seq-ex-stop-probability": {"not renormalised": _stop_not_renormalised,
                                    "eos forced before the cut": _stop_eos_forced_before_cut},
    "seq2seq-ex-self-terminating": {"no 1 - epsilon": _st_without_one_minus_epsilon,
                                    "no running product": _st_no_running_product,
                                    "softmax over all tokens": _st_softmax_over_all_tokens,
                                    "product over i < t": _st_product_before_t},
}


def test_a_long_integer_mask_is_accepted_for_the_nucleus():
    """A 0/1 integer mask says the same as a boolean one: not a wrong answer."""
    from kitlib.exercises import check_answer

    def as_long(logits, top_p, eos_id=None):
        sorted_probs, order = logits.softmax(-1).sort(dim=-1, descending=True)
        keep = torch.zeros_like(logits, dtype=torch.long).scatter(
            -1, order, (sorted_probs.cumsum(-1) - sorted_probs < top_p).long())
        if eos_id is not None:
            keep[..., eos_id] = 1
        return keep

    assert check_answer("seq2seq-ex-nucleus", as_long)


def test_a_wrong_shape_is_a_wrong_answer_not_a_crash():
    import pytest

    from kitlib.exercises import WrongAnswer, check_answer

    with pytest.raises(WrongAnswer):
        check_answer("seq2seq-ex-stop-probability", lambda logits, eos_id, k, consistent: logits.softmax(-1))
    with pytest.raises(WrongAnswer):
        check_answer("seq2seq-ex-nucleus", lambda logits, top_p, eos_id=None: "all")


def test_answers_that_accumulate_in_a_float32_tensor_are_accepted():
    """A right answer that fills a default (float32) tensor row by row, or step by step with ∏β kept in
    float32, differs from the float64 reference only by float32 rounding: not a wrong answer."""
    from kitlib.exercises import check_answer

    def stop_in_float32(logits, eos_id, k, consistent):
        q = torch.zeros(len(logits))
        for row, z in enumerate(logits):
            keep = torch.zeros_like(z, dtype=torch.bool)
            keep[z.topk(k).indices] = True
            if consistent:
                keep[eos_id] = True
            probs = z.softmax(-1)
            q[row] = probs[eos_id] * keep[eos_id] / (probs * keep).sum()
        return q

    def self_terminating_in_float32(logits, eos_id, epsilon):
        batch, steps, vocab = logits.shape
        out = torch.zeros(batch, steps, vocab)
        survival = torch.ones(batch)
        is_eos = torch.arange(vocab) == eos_id
        for t in range(steps):
            survival *= (1 - epsilon) * torch.sigmoid(logits[:, t, eos_id])
            out[:, t] = survival[:, None] * logits[:, t].masked_fill(is_eos, -torch.inf).softmax(-1)
            out[:, t, eos_id] = 1 - survival
        return out

    assert check_answer("seq2seq-ex-stop-probability", stop_in_float32)
    assert check_answer("seq2seq-ex-self-terminating", self_terminating_in_float32)
