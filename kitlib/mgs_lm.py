"""MGS fine-tuning of a language model with the official semantics of ``wellecks/mgs`` (sampling-optimisation,
claim O9): the ``lm`` task loss, the training decode cap, and the evaluation metrics.

- **Task loss** (``--ggs-metric lm``): the negative log-likelihood of the model's own greedy continuation
  under a *frozen* copy $\\theta_0$ of the pre-trained model, up to and including the first eos,

  $$C(\\theta)=\\frac1B\\sum_{b=1}^B-\\sum_{t\\le T_b}\\log p_{\\theta_0}(\\hat y_{b,t}\\mid x_b,\\hat y_{b,<t}),\\qquad
  \\hat y_b=\\mathrm{greedy}_\\theta(x_b),$$

  with $T_b$ the position of the first eos, or the cap when there is none (the official code also scores the
  context tokens; they are the same for every candidate of a batch and cancel in the weights).
- **Decode cap** during training: one per batch, $\\lfloor1.3\\,(n_{\\max}+2)\\rfloor$ tokens in all with
  $n_{\\max}+2$ the official "index of eos in the longest shifted target, + 2", i.e. the longest sentence of the
  batch counted with its context and its eos; the continuation gets that minus the context.
- **Evaluation**: non-termination = no eos within 500 tokens (context included), greedy; repeat-4 =
  $1-\\#\\text{distinct 4-grams}/\\#\\text{4-grams}$ of the continuation up to and including eos. As a task loss
  the official repeat-4 is 1 for a continuation of fewer than 4 tokens; as an evaluation metric such a
  continuation is left out of the mean.
"""

from __future__ import annotations

import math

import torch

from .decoding import Decoded, greedy
from .policy_gradient import sequence_log_probs

EVAL_TOTAL_LENGTH = 500  # the official --eval-decode-max-length / --token-limit-eval of the README


def batch_decode_cap(lengths: torch.Tensor | list[int], context: int, factor: float = 1.3,
                     decode_max_length: int = 1000) -> int:
    """Continuation tokens allowed for a batch of sentences of ``lengths`` (context and eos included):
    $\\min(\\lfloor\\text{factor}\\cdot\\max_b n_b\\rfloor, 1000)-\\text{context}$, at least 1 (the official
    ``max_length`` counts the context, as the decoder's ``max_length`` does)."""
    longest = int(max(int(n) for n in lengths))
    total = min(decode_max_length, max(1, int(factor * longest)))
    return max(1, total - context)


def continuation_tokens(decoded: Decoded) -> list[list[int]]:
    """Each decoded continuation up to and including its first eos (all of it when there is none)."""
    return [row[:length] for row, length in zip(decoded.tokens.tolist(), decoded.lengths.tolist())]


def repeat4(decoded: Decoded, short: float | None = 1.0) -> torch.Tensor:
    """Official repeat-4 per sequence (B,): $1-\\#\\text{distinct}/\\#\\text{total}$ 4-grams of the continuation
    with its eos; a continuation of fewer than 4 tokens scores ``short`` (1.0, the task loss) or NaN with
    ``short=None`` (left out by ``nanmean``, the evaluation metric)."""
    rates = []
    for tokens in continuation_tokens(decoded):
        grams = [tuple(tokens[i: i + 4]) for i in range(len(tokens) - 3)]
        rates.append(1 - len(set(grams)) / len(grams) if grams else (math.nan if short is None else short))
    return torch.tensor(rates, dtype=torch.float64)


@torch.no_grad()
def lm_task_loss(score_model, prefixes: torch.Tensor, decoded: Decoded) -> torch.Tensor:
    """Per-sequence $-\\sum_{t\\le T_b}\\log p_{\\theta_0}(\\hat y_t\\mid\\cdot)$ (B,) of decoded continuations under
    the frozen ``score_model``."""
    return -sequence_log_probs(score_model, prefixes, decoded.tokens, decoded.lengths)


def decode_batch(model, prefixes: torch.Tensor, cap: int) -> Decoded:
    """Greedy continuations of ``prefixes`` (B, context), at most ``cap`` tokens, without gradients."""
    with torch.no_grad():
        return greedy(model, prefixes, cap)


@torch.no_grad()
def evaluate_termination(model, prefixes: torch.Tensor, total_length: int = EVAL_TOTAL_LENGTH,
                         batch_size: int = 512) -> dict:
    """Greedy decodes of held-out ``prefixes`` (N, context) to ``total_length`` tokens in all: the number not
    terminated, the mean official repeat-4 in its evaluation form (over the continuations of 4 tokens or more;
    NaN when there are none, as the official ``np.mean([])``) with their number, in its task form (shorter ones
    count 1), and the mean continuation length."""
    rows = []
    for start in range(0, len(prefixes), batch_size):
        rows.append(greedy(model, prefixes[start: start + batch_size], total_length - prefixes.shape[1]))
    terminated = torch.cat([d.terminated for d in rows])
    repeats = torch.cat([repeat4(d, short=None) for d in rows])
    scored = ~repeats.isnan()
    lengths = torch.cat([d.lengths for d in rows]).double()
    return {"non-terminated": int((~terminated).sum()), "prefixes": len(terminated),
            "repeat-4": float(repeats[scored].mean()) if scored.any() else math.nan, "repeat-4 scored": int(scored.sum()),
            "repeat-4 (task form)": float(repeats.nan_to_num(1.0).mean()), "length": float(lengths.mean())}
