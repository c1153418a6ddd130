"""Training the tiny Transformers of chapter ``deepnet-residual`` with Adam and an optional linear warm-up,
tracking the model update ‖F(x; θ_t) − F(x; θ_0)‖ of DeepNet Figs. 3–5 on a fixed probe batch.

Why a loop of its own rather than :func:`kitlib.train.fit`: here a non-finite loss is an *outcome* the chapter
compares (Post-LN at depth may diverge), so it is recorded and training stops, where ``fit`` raises
:class:`kitlib.train.DivergenceError`; the learning rate follows a per-step warm-up schedule; every step draws
a fresh batch (no epochs); and the model's output change is measured after every step. Those four differences
would each need a new option in the shared loop for one chapter, so the loop stays here, visible, in 25 lines.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .sequence_batches import random_windows, translation_pairs
from .tiny_transformers import TinyTransformerLM, TinyTransformerSeq2Seq
from .train import progress_bar


def next_token_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting windows[:, 1:] from windows[:, :-1] (nats per token)."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


def translation_loss(model: TinyTransformerSeq2Seq, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-entropy of target[:, 1:] given the source and target[:, :-1]."""
    logits = model(source, target[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), target[:, 1:].flatten())


def warmup_lr(lr: float, step: int, warmup: int) -> float:
    """Linear warm-up: η_t = η · min(1, (t + 1)/warmup) for step t = 0, 1, ...; η throughout when warmup = 0."""
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr


def adam_with_warmup(model: nn.Module, draw, loss_of, *, steps: int, lr: float, warmup: int = 0,
                     betas=(0.9, 0.98), features=None, progress: bool = True, desc: str = "training") -> dict:
    """``steps`` steps of Adam on ``loss_of(draw())`` (a fresh batch each step) at :func:`warmup_lr`.

    Returns ``{"loss": [per step], "update": [per step], "diverged": step or None}``: ``update`` is the rms over
    probe positions of ‖F_t − F_0‖ for ``features()`` = F(probe; θ_t) (empty without ``features``). A NaN or
    infinite loss stops training and sets ``diverged`` to its step. Adam is torch's, ``fused`` on the CPU
    (the same update rule, one kernel for all parameters)."""
    fused = next(model.parameters()).device.type == "cpu"
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, fused=fused)
    history = {"loss": [], "update": [], "diverged": None}
    if features is not None:
        with torch.no_grad():
            initial = features()
    for step in progress_bar(range(steps), desc, progress):
        for group in optimiser.param_groups:
            group["lr"] = warmup_lr(lr, step, warmup)
        loss = loss_of(draw())
        if not torch.isfinite(loss):
            history["diverged"] = step
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history["loss"].append(float(loss.detach()))
        if features is not None:
            with torch.no_grad():
                history["update"].append(float((features() - initial).pow(2).sum(-1).mean().sqrt()))
    return history


def train_language_model(model: TinyTransformerLM, tokens: torch.Tensor, *, steps: int, batch: int,
                         length: int, lr: float, warmup: int = 0, betas=(0.9, 0.98),
                         generator: torch.Generator, probe: torch.Tensor | None = None,
                         progress: bool = True, desc: str = "training") -> dict:
    """:func:`adam_with_warmup` on next-token cross-entropy of :func:`random_windows` of ``tokens`` (``batch``
    windows of ``length`` characters per step); ``probe`` (inputs, shape (B, n)) tracks F = ``model.features``."""
    device = next(model.parameters()).device  # windows are drawn on the CPU (CPU generator), then moved
    return adam_with_warmup(model, lambda: random_windows(tokens, batch, length, generator).to(device),
                            lambda windows: next_token_loss(model, windows), steps=steps, lr=lr, warmup=warmup,
                            betas=betas, features=(lambda: model.features(probe)) if probe is not None else None,
                            progress=progress, desc=desc)


def train_translation(model: TinyTransformerSeq2Seq, *, steps: int, batch: int, length: int, vocabulary: int,
                      lr: float, generator: torch.Generator, permutation: torch.Tensor, warmup: int = 0,
                      betas=(0.9, 0.98), probe: tuple | None = None, eval_pairs: int = 256,
                      progress: bool = True, desc: str = "translation") -> dict:
    """:func:`adam_with_warmup` on fresh batches of :func:`translation_pairs`; ``probe`` is a (source, target)
    pair. Also returns the teacher-forced token accuracy on ``eval_pairs`` held-out pairs after training
    (``accuracy``)."""
    device = next(model.parameters()).device

    def draw():
        return tuple(t.to(device) for t in translation_pairs(batch, length, vocabulary, generator, permutation))

    history = adam_with_warmup(model, draw, lambda pair: translation_loss(model, *pair), steps=steps, lr=lr,
                               warmup=warmup, betas=betas,
                               features=(lambda: model.features(probe[0], probe[1][:, :-1])) if probe else None,
                               progress=progress, desc=desc)
    source, target = (t.to(device) for t in translation_pairs(eval_pairs, length, vocabulary, generator,
                                                              permutation))
    with torch.no_grad():
        predicted = model(source, target[:, :-1]).argmax(-1)
    history["accuracy"] = float((predicted == target[:, 1:]).float().mean())
    return history


def unigram_cross_entropy(counts: torch.Tensor, targets: torch.Tensor) -> float:
    """Loss of the character-frequency (unigram) model on ``targets`` (token ids, any shape), nats per token:
    −mean log p(t) with p = counts / Σ counts (``counts`` (V,) from the training text, every target's count > 0).
    The baseline a language model beats by learning frequencies alone; chapter ``deepnet-residual`` measures the
    trained models' held-out loss against it."""
    log_p = (counts.double() / counts.sum()).log().to(targets.device)
    return float(-log_p[targets].mean())


def early_update_table(tokens: torch.Tensor, vocabulary: int, norms, depths, seeds, *, steps: int, lr: float,
                       batch: int = 8, length: int = 32, device: torch.device | str = "cpu",
                       progress: bool = True) -> dict:
    """The paper's Fig. 5 on the language model: ``steps`` steps of Adam (η = ``lr``, no warm-up, all
    parameters) from the initialisation of a :class:`TinyTransformerLM` per norm, depth and seed, tracking the
    model update ‖F(x; θ_t) − F(x; θ_0)‖ (rms over the positions of a fixed probe batch of ``batch`` windows)
    after every step t = 1 … ``steps``. Seed s initialises the model (``torch.manual_seed(s)``), draws the
    training batches (``Generator(s)``) and the probe (``Generator(20_000 + s)``), the same for every norm.
    Returns ``{norm: array (depths, seeds, steps)}``."""
    table = {norm: np.zeros((len(depths), len(seeds), steps)) for norm in norms}
    cells = [(norm, i, j) for norm in norms for i in range(len(depths)) for j in range(len(seeds))]
    for norm, i, j in progress_bar(cells, "early Adam steps", progress):
        seed = int(seeds[j])
        torch.manual_seed(seed)
        model = TinyTransformerLM(vocabulary, int(depths[i]), norm, context=length).to(device)
        probe = random_windows(tokens, batch, length, torch.Generator().manual_seed(20_000 + seed))[:, :-1]
        history = train_language_model(model, tokens, steps=steps, batch=batch, length=length, lr=lr,
                                       generator=torch.Generator().manual_seed(seed), probe=probe.to(device),
                                       progress=False)
        if history["diverged"] is not None:
            raise FloatingPointError(f"{norm} at {depths[i]} layers diverged at step {history['diverged']}")
        table[norm][i, j] = history["update"]
    return table
