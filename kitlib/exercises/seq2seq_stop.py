"""Exercises of the `seq2seq-stop` chapter, each verified on hidden inputs against kitlib.decoding and
kitlib.language_model (``filter_candidates``, ``stop_probability`` and ``SelfTerminatingLayer``, each tested
against a loop over tokens or steps in tests/test_decoding.py)."""

from __future__ import annotations

import torch

from kitlib.decoding import filter_candidates, stop_probability
from kitlib.exercises import Exercise, WrongAnswer, as_array, expect_close, hidden_generator
from kitlib.language_model import SelfTerminatingLayer


def _logit_rows(g: torch.Generator, rows: int, vocab: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(rows, vocab, generator=g, dtype=torch.float64)


def _as_mask(got, shape, what: str) -> torch.Tensor:
    """The answer as a boolean tensor of ``shape``; WrongAnswer for anything that is not a 0/1 mask."""
    array = as_array(got, what)
    if tuple(array.shape) != tuple(shape):
        raise WrongAnswer(f"{what} should have shape {tuple(shape)} (one entry per token of each row), "
                          f"got {tuple(array.shape)}")
    if not ((array == 0) | (array == 1)).all():
        raise WrongAnswer(f"{what} should be a mask: True (or 1) for a candidate, False (or 0) otherwise")
    return torch.from_numpy(array).bool()


def _verify_nucleus(answer) -> None:
    g = hidden_generator("seq2seq-ex-nucleus")
    for vocab in (7, 20, 100):
        logits = _logit_rows(g, 40, vocab, 2.5)
        for top_p in torch.rand(3, generator=g, dtype=torch.float64).mul(0.9).add(0.05).tolist():
            eos_id = int(torch.randint(vocab, (), generator=g))
            # the token whose mass-before lies within rounding of top_p may go either way: not checked
            probs = logits.softmax(-1)
            sorted_probs, order = probs.sort(-1, descending=True)
            near = ((sorted_probs.cumsum(-1) - sorted_probs - top_p).abs() < 1e-9)
            ambiguous = torch.zeros_like(near).scatter_(-1, order, near)
            for consistent in (False, True):
                if consistent:
                    got = answer(logits.clone(), top_p, eos_id)
                    want = filter_candidates(logits, top_p=top_p, eos_id=eos_id)
                    kind = "consistent nucleus (eos_id given)"
                else:
                    got = answer(logits.clone(), top_p)
                    want = filter_candidates(logits, top_p=top_p)
                    kind = "plain nucleus (eos_id=None)"
                mask = _as_mask(got, want.shape, f"the candidate mask for {len(logits)} hidden rows")
                wrong = ((mask != want) & ~ambiguous).any(-1)
                if wrong.any():
                    raise WrongAnswer(f"{kind}, |V| = {vocab}, a hidden top_p: the candidate set differs from "
                                      f"an independent computation on {int(wrong.sum())} of {len(logits)} rows")


def _verify_stop_probability(answer) -> None:
    g = hidden_generator("seq2seq-ex-stop-probability")
    for vocab, k in ((6, 1), (10, 2), (30, 3), (50, 5)):
        logits = _logit_rows(g, 60, vocab, 2.0)
        eos_id = int(torch.randint(vocab, (), generator=g))
        logits[::2, eos_id] += 2.5  # half of the rows: eos often among the k most likely tokens
        for consistent in (False, True):
            got = answer(logits.clone(), eos_id, k, consistent)
            want = stop_probability(logits, eos_id, top_k=k, consistent=consistent)
            # rtol 1e-6: an answer that stores q in a float32 tensor is right (relative error ~6e-8)
            expect_close(got, want, rtol=1e-6, atol=1e-12,
                         what=f"q for {len(logits)} hidden rows (|V| = {vocab}, k = {k}, consistent={consistent})")


def _verify_self_terminating(answer) -> None:
    g = hidden_generator("seq2seq-ex-self-terminating")
    for (batch, steps, vocab), epsilon in (((3, 40, 6), 0.3), ((4, 30, 12), 0.05), ((2, 80, 9), 1e-2),
                                           ((3, 25, 20), 1e-3)):
        logits = 3.0 * torch.randn(batch, steps, vocab, generator=g, dtype=torch.float64)
        eos_id = int(torch.randint(vocab, (), generator=g))
        logits[..., eos_id] += 2.0  # σ(z_eos) near 1 on many steps, so the factor (1 − ε) shows
        got = answer(logits.clone(), eos_id, epsilon)
        want = SelfTerminatingLayer(epsilon, eos_id)(logits).exp()
        # probabilities: an answer that accumulates ∏β in a float32 tensor is right, and its error is absolute
        # in p(eos) = 1 − ∏β (float32 rounding over up to 80 steps, the tolerance of S4 and S6)
        expect_close(got, want, rtol=1e-6, atol=1e-6,
                     what=f"the probabilities (B, T, V) = {tuple(logits.shape)} at a hidden ε")


EXERCISES = [
    Exercise(
        label="seq2seq-ex-nucleus", chapter="seq2seq-stop", function="nucleus_candidates",
        asks="Write the candidate mask of nucleus sampling, and of its consistent variant when eos_id is given.",
        expected="for each row, True for the most probable tokens in decreasing order of probability as long as "
                 "the mass before a token is below top_p (so the token that crosses top_p is kept, and the most "
                 "probable token always), False for the others; with eos_id, eos is set True in every row on top "
                 "of that set, nothing else changes",
        minutes=20, prerequisites="section 1 (incomplete and consistent decoders, S7)",
        verify=_verify_nucleus),
    Exercise(
        label="seq2seq-ex-stop-probability", chapter="seq2seq-stop", function="top_k_stop_probability",
        asks="Write the probability q that one step of top-k sampling, plain or consistent, emits eos.",
        expected="softmax(z) restricted to the candidate set (the k largest logits, plus eos when consistent) and "
                 "renormalised over it, evaluated at eos: 0 when plain top-k drops eos, and at least p(eos) when "
                 "eos is a candidate; one value per row",
        minutes=15, prerequisites="sections 2–3 (S2, S3)", verify=_verify_stop_probability),
    Exercise(
        label="seq2seq-ex-self-terminating", chapter="seq2seq-stop", function="self_terminating_probabilities",
        asks="Write the self-terminating layer: next-token probabilities of every step from logits (B, T, V).",
        expected="at step t, p(eos) = 1 − ∏_{i≤t} β_i with β_i = (1 − ε)σ(z_{i,eos}), and every other token gets "
                 "∏_{i≤t} β_i times its softmax over the tokens other than eos; rows sum to 1",
        minutes=20, prerequisites="section 4 (S4–S6)", verify=_verify_self_terminating),
]
