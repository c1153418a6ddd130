"""Policy gradient for sequence models (sampling-optimisation's baseline beside MLE and MGS): the score
function of decoded continuations and the REINFORCE loss with a batch-mean baseline."""

from __future__ import annotations

import torch

from .language_model import RecurrentLM


def sequence_log_probs(model: RecurrentLM, prefixes: torch.Tensor, tokens: torch.Tensor,
                       lengths: torch.Tensor) -> torch.Tensor:
    """Differentiable $\\sum_t\\log p(y_t\\mid\\text{prefix},y_{<t})$ of decoded continuations (B, T) padded
    with −1 after ``lengths``: the score function of policy gradient."""
    steps = int(lengths.max())
    continuation = tokens[:, :steps].clamp(min=0)
    inputs = torch.cat([prefixes, continuation[:, :-1]], dim=1)
    log_probs = model.continuation_log_probs(inputs, prefixes.shape[1])
    picked = log_probs.gather(-1, continuation[..., None]).squeeze(-1)
    scored = torch.arange(steps, device=tokens.device)[None, :] < lengths[:, None]
    return (picked * scored).sum(-1)


def policy_gradient_loss(model: RecurrentLM, prefixes: torch.Tensor, max_len: int, cost,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """REINFORCE with the batch-mean baseline: sample continuations (ancestral), score each with
    ``cost(decoded)`` (B,), and return the loss $\\frac1B\\sum_i(c_i-\\bar c)\\log p_\\theta(y_i)$, whose
    gradient estimates $\\nabla\\mathbb E[c]$, with the mean cost."""
    from .decoding import sample

    with torch.no_grad():
        decoded = sample(model, prefixes, max_len, generator=generator)
    costs = cost(decoded).to(prefixes.device).float()
    log_p = sequence_log_probs(model, prefixes, decoded.tokens, decoded.lengths)
    return ((costs - costs.mean()) * log_p).mean(), float(costs.mean())
