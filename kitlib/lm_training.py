"""Training and scoring a recurrent LM on sentences (seq2seq-stop, sampling-optimisation): the continuation
negative log-likelihood, perplexity, and the official training loop (Adam, clipping, lr halving)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .language_model import RecurrentLM
from .sentences import SentenceData, length_batches
from .train import DivergenceError, progress_bar


def continuation_nll(model: RecurrentLM, ids: torch.Tensor, lengths: torch.Tensor,
                     context: int) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of every continuation token (after ``context``, eos included) and
    their number, for padded sentences."""
    log_probs = model.continuation_log_probs(ids[:, :-1], context)
    targets = ids[:, context:]
    scored = torch.arange(targets.shape[1], device=ids.device)[None, :] < (lengths[:, None] - context)
    picked = log_probs.gather(-1, targets[..., None]).squeeze(-1)
    return -(picked * scored).sum(), int(scored.sum())


@torch.no_grad()
def perplexity(model: RecurrentLM, sentences: list[torch.Tensor], context: int, device: torch.device,
               batch_size: int = 256) -> float:
    """exp of the mean continuation NLL per token (eos included)."""
    model.eval()
    total, count = 0.0, 0
    for ids, lengths in length_batches(sentences, batch_size):
        nll, n = continuation_nll(model, ids.to(device), lengths.to(device), context)
        total, count = total + float(nll), count + n
    return math.exp(total / count)


def train_recurrent_lm(model: RecurrentLM, data: SentenceData, epochs: int, batch_size: int, lr: float,
                       device: torch.device, generator: torch.Generator, clip: float = 1.0,
                       progress: bool = True, desc: str = "train LM", after_epoch=None) -> list[float]:
    """Adam on the continuation NLL (the official setup: lr 1e-3, gradient clipping at 1.0), halving the
    learning rate after an epoch whose validation perplexity did not improve. Returns the validation
    perplexity after each epoch; raises ``DivergenceError`` on a non-finite loss. ``after_epoch(epoch,
    model, valid_ppl)``, when given, is called after each epoch (1, 2, ...) with the model in eval mode, e.g.
    to keep snapshots (seq2seq-stop)."""
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    valid_ppl = []
    for epoch in progress_bar(range(epochs), desc, progress):
        model.train()
        for step, (ids, lengths) in enumerate(length_batches(data.train, batch_size, generator)):
            nll, n = continuation_nll(model, ids.to(device), lengths.to(device), data.context)
            loss = nll / n
            if not torch.isfinite(loss):
                raise DivergenceError(f"loss became {float(loss)} at epoch {epoch}, step {step}: lower the "
                                      "learning rate or the gradient clipping threshold")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimiser.step()
        valid_ppl.append(perplexity(model, data.valid, data.context, device))
        if after_epoch is not None:
            after_epoch(epoch + 1, model, valid_ppl[-1])
        if len(valid_ppl) > 1 and valid_ppl[-1] >= min(valid_ppl[:-1]):
            for group in optimiser.param_groups:
                group["lr"] *= 0.5
    model.eval()
    return valid_ppl
