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


class MovingAverageBaseline:
    """The official PG baseline (``wellecks/mgs``, ``pg/utils.py``, ``AvgBaseline``): before each use it is
    updated with the batch's mean reward, $b\\leftarrow(1-a)\\,b+a\\,\\bar r$ with $a=0.95$ (so the current batch
    weighs 0.95), starting from $b=0$."""

    def __init__(self, weight: float = 0.95):
        self.value, self.weight = 0.0, weight

    def update(self, rewards: torch.Tensor) -> float:
        self.value = (1 - self.weight) * self.value + self.weight * float(rewards.mean())
        return self.value


def official_pg_loss(model: RecurrentLM, prefixes: torch.Tensor, max_len: int, cost, baseline: MovingAverageBaseline,
                     samples: int = 4, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """The official PG loss: ``samples`` ancestral continuations per prefix, costs $d$ from ``cost(prefixes,
    decoded)`` (B·samples,), normalised by their maximum (``--pg-normalize-distance 1``), reward $r=-d/\\max d$,
    advantage $r-b$ with ``baseline`` updated first, and the length-normalised score
    $\\bar\\ell=\\frac1{T}\\sum_t\\log p_\\theta(y_t\\mid\\cdot)$ (eos included):
    $L=-\\frac1B\\sum_b\\sum_s(r_{bs}-b)\\,\\bar\\ell_{bs}$. Returns the loss and the mean raw cost."""
    from .decoding import sample

    repeated = prefixes.repeat_interleave(samples, dim=0)
    with torch.no_grad():
        decoded = sample(model, repeated, max_len, generator=generator)
    costs = cost(repeated, decoded).to(prefixes.device).float()
    rewards = -costs / costs.max().clamp(min=1e-12)
    advantage = rewards - baseline.update(rewards)
    log_p = sequence_log_probs(model, repeated, decoded.tokens, decoded.lengths) / decoded.lengths.clamp(min=1)
    return -(advantage * log_p).view(len(prefixes), samples).sum(1).mean(), float(costs.mean())
