"""A small, visible training loop shared by the chapters.

``fit`` runs epochs of (loss → optional objective → backward → step), keeps the history of every step
and of periodic evaluations, shows a tqdm bar (``TQDM_DISABLE=1`` or ``progress=False`` silences it), and stops with
:class:`DivergenceError` naming the step when the loss is NaN or infinite.

A loss may be a scalar or a vector of independent per-member losses (:class:`kitlib.models.BatchedMLP`):
the objective's *sum* is differentiated, so members do not interact.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite."""


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Raise :class:`DivergenceError` naming the step if any entry of ``loss`` is NaN or ±inf."""
    if not bool(torch.isfinite(loss).all()):
        raise DivergenceError(f"the training loss is {loss.detach().cpu().tolist()} at step {step}: training "
                              f"diverged; lower the learning rate (or check the data for NaN)")


@dataclass
class History:
    """Per-step values (``steps``) and per-evaluation values (``evals``, with the epoch in ``evals['epoch']``)."""

    steps: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    evals: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def step_array(self, name: str) -> np.ndarray:
        """Shape (steps,) or (steps, members)."""
        return torch.stack([torch.as_tensor(v) for v in self.steps[name]]).cpu().numpy()

    def eval_array(self, name: str) -> np.ndarray:
        """Shape (evaluations,) or (evaluations, members)."""
        return torch.stack([torch.as_tensor(v) for v in self.evals[name]]).cpu().numpy()


def progress_bar(iterable, desc: str, progress: bool = True):
    """``tqdm(iterable)`` that disappears when done and is silent with ``progress=False`` or ``TQDM_DISABLE=1``
    (an explicit ``disable=`` overrides tqdm's own reading of the variable, so it is honoured here)."""
    silent = not progress or os.environ.get("TQDM_DISABLE", "") not in ("", "0")
    return tqdm(iterable, desc=desc, disable=silent, leave=False)


def fit(model: torch.nn.Module, optimiser: torch.optim.Optimizer,
        loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor], batches: Callable[[int], Iterable[Any]],
        epochs: int, *, objective: Callable[[torch.Tensor], torch.Tensor] | None = None,
        evaluate: Callable[[torch.nn.Module], dict[str, torch.Tensor]] | None = None, eval_every: int = 1,
        track_grad_norm: bool = False, progress: bool = True, desc: str = "training") -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    - ``batches(epoch)`` yields the batches of one epoch; ``loss_fn(model, batch)`` returns the loss.
    - ``objective(loss)`` is what is differentiated (default: the loss itself), e.g. the flooded loss.
      The history keeps the raw loss under ``"loss"``.
    - ``evaluate(model)`` runs in eval mode without gradients before training (epoch 0), every
      ``eval_every`` epochs and after the last; its values go to ``history.evals``.
    - ``track_grad_norm`` records ‖∇ objective‖² after each backward pass under ``"grad_norm_sq"``.
    """
    history = History()

    def run_evaluation(epoch: int) -> None:
        if evaluate is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            values = evaluate(model)
        model.train(was_training)
        history.evals["epoch"].append(epoch)
        for name, value in values.items():
            history.evals[name].append(torch.as_tensor(value).detach())

    run_evaluation(0)
    step = 0
    for epoch in progress_bar(range(1, epochs + 1), desc, progress):
        model.train()
        for batch in batches(epoch):
            loss = loss_fn(model, batch)
            check_finite(loss, step)
            target = objective(loss) if objective is not None else loss
            optimiser.zero_grad(set_to_none=True)
            target.sum().backward()
            history.steps["loss"].append(loss.detach())
            if track_grad_norm:
                history.steps["grad_norm_sq"].append(
                    sum((p.grad.detach() ** 2).sum() for p in model.parameters() if p.grad is not None))
            optimiser.step()
            step += 1
        if epoch % eval_every == 0 or epoch == epochs:
            run_evaluation(epoch)
    return history
