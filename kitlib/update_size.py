"""The size of one update, measured (chapter ``deepnet-residual``): take one SGD or Adam step from the
initialisation and measure how far the model's output moves, ‖F(x; θ') − F(x; θ)‖ — the "model update" of
DeepNet Figs. 4–5 and the quantity Su's increment-explosion argument (kexue.fm/archives/8994) is about:

    ΔL ≈ ⟨∇_θ L, Δθ⟩ = −η ‖∇_θ L‖²  (SGD),      −η ‖∇_θ L‖₁  (Adam's first step, η·sign(g)).

:func:`one_step_update` works for any model; :func:`update_size_sweep` runs it over the feed-forward bench
:class:`kitlib.deepnorm.FFNStack`, :func:`lm_one_step_update` and :func:`seq2seq_one_step_update` over the tiny
Transformers of :mod:`kitlib.tiny_transformers`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .deepnorm import FFNStack
from .sequence_batches import random_windows, translation_pairs
from .tiny_transformers import TinyTransformerLM, TinyTransformerSeq2Seq, is_block_matrix, is_weight_matrix
from .train import progress_bar


def half_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = ½ · mean over samples of ‖F(x_i) − y_i‖²."""
    return 0.5 * (output - target).pow(2).sum(-1).mean()


def one_step_update(model: nn.Module, inputs, targets: torch.Tensor, optimiser: str, lr: float, *,
                    output_fn=None, loss_fn=None, trainable=None) -> dict:
    """Take one step of ``optimiser`` ("sgd" or "adam") from a copy of ``model``; return

    - ``update``: rms over samples (tokens) of ‖F(x; θ') − F(x; θ)‖ (the paper's model update ‖ΔF‖);
    - ``grad_sq``, ``grad_l1``: ‖∇_θ L‖², ‖∇_θ L‖₁ at θ over the trained parameters;
    - ``loss_change``: L(θ') − L(θ), to compare with −η‖g‖² (SGD) or −η‖g‖₁ (Adam's first step ≈ sign).

    F = ``output_fn(model, inputs)`` (default ``model(inputs)``, shape (..., d)) and L = ``loss_fn(model, F,
    targets)`` (default ½ mean ‖F − y‖²): the loss is computed from the same forward pass as F (a language
    model's last hidden state F and its cross-entropy through the output head, say). ``trainable(name)``
    selects the parameters that take the step (default: all; the others are frozen in the copy).
    Adam's first step with bias correction is η·g/(|g| + ε), i.e. η·sign(g) up to ε; torch's Adam is used.
    ``model`` itself is not changed.
    """
    output_fn = output_fn or (lambda m, x: m(x))
    loss_fn = loss_fn or (lambda m, output, y: half_squared_error(output, y))
    stepped = copy.deepcopy(model)
    params = []
    for name, p in stepped.named_parameters():
        if trainable is None or trainable(name):
            params.append(p)
        else:
            p.requires_grad_(False)
    if optimiser == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    elif optimiser == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        raise ValueError(f"unknown optimiser {optimiser!r}; choose 'sgd' or 'adam'")
    output = output_fn(stepped, inputs)
    loss = loss_fn(stepped, output, targets)
    loss.backward()
    output = output.detach()
    params = [p for p in params if p.grad is not None]  # parameters the loss does not reach
    grad_sq = sum(float(p.grad.pow(2).sum()) for p in params)
    grad_l1 = sum(float(p.grad.abs().sum()) for p in params)
    opt.step()
    with torch.no_grad():
        new_output = output_fn(stepped, inputs)
        new_loss = loss_fn(stepped, new_output, targets)
        update = (new_output - output).pow(2).sum(-1).mean().sqrt()
    if not torch.isfinite(update):
        raise FloatingPointError(
            f"the one-step update of {getattr(model, 'architecture', 'the model')} is not finite: "
            "lower the learning rate or the depth"
        )
    return {"update": float(update), "grad_sq": grad_sq, "grad_l1": grad_l1,
            "loss_change": float(new_loss - loss.detach())}


def update_size_sweep(architectures, depths, seeds, optimiser: str, lr: float, *, width: int = 64,
                      batch: int = 64, device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """:func:`one_step_update` of an :class:`FFNStack` for every architecture, depth and seed.

    Seed s draws the weights, a batch x ~ N(0, I) and targets y ~ N(0, I) (the same for every architecture).
    Returns ``{architecture: {"update": array (depths, seeds), "grad_sq": array (depths, seeds)}}``."""
    cells = [(a, i, j) for a in architectures for i in range(len(depths)) for j in range(len(seeds))]
    out = {a: {"update": np.zeros((len(depths), len(seeds))), "grad_sq": np.zeros((len(depths), len(seeds)))}
           for a in architectures}
    for arch, i, j in progress_bar(cells, f"one {optimiser} step", progress):
        gen = torch.Generator().manual_seed(int(seeds[j]))
        stack = FFNStack(width, depths[i], arch, generator=gen).to(device)
        x = torch.randn(batch, width, generator=gen).to(device)
        y = torch.randn(batch, width, generator=gen).to(device)
        result = one_step_update(stack, x, y, optimiser, lr)
        out[arch]["update"][i, j], out[arch]["grad_sq"][i, j] = result["update"], result["grad_sq"]
    return out


def _head_cross_entropy(model: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``model.head(features)`` (B, n, V) against ``targets`` (B, n)."""
    return F.cross_entropy(model.head(features).flatten(0, 1), targets.flatten())


def lm_one_step_update(model: TinyTransformerLM, windows: torch.Tensor, optimiser: str, lr: float,
                       matrices_only: bool = False) -> dict:
    """:func:`one_step_update` for a language model: F = last hidden state (``features``) of windows[:, :-1]
    (shape (B, n, d)), L = next-token cross-entropy; ``matrices_only`` steps only
    :func:`~kitlib.tiny_transformers.is_weight_matrix` parameters."""
    return one_step_update(model, windows[:, :-1], windows[:, 1:], optimiser, lr,
                           output_fn=lambda m, x: m.features(x), loss_fn=_head_cross_entropy,
                           trainable=is_weight_matrix if matrices_only else None)


def seq2seq_one_step_update(model: TinyTransformerSeq2Seq, source: torch.Tensor, target: torch.Tensor,
                            optimiser: str, lr: float, matrices_only: bool = False) -> dict:
    """:func:`one_step_update` for the encoder-decoder: F = decoder features, L = teacher-forced cross-entropy;
    ``matrices_only`` steps only the blocks' attention and FFN weight matrices
    (:func:`~kitlib.tiny_transformers.is_block_matrix`)."""
    return one_step_update(model, (source, target[:, :-1]), target[:, 1:], optimiser, lr,
                           output_fn=lambda m, x: m.features(*x), loss_fn=_head_cross_entropy,
                           trainable=is_block_matrix if matrices_only else None)


def lm_update_table(tokens: torch.Tensor, vocabulary: int, norms, depths, seeds, panels, *, batch: int = 8,
                    length: int = 32, device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """:func:`lm_one_step_update` of a :class:`TinyTransformerLM` (context ``length``) for every panel, norm,
    depth and seed. A panel is (optimiser, lr, matrices_only). Seed s initialises the model
    (``torch.manual_seed(s)``) and draws ``batch`` windows of ``length`` characters (``Generator(s)``); every
    panel steps the same model and windows. Returns ``{(optimiser, matrices_only, norm): array (depths,
    seeds)}`` of ‖ΔF‖. Used by chapter ``deepnet-residual`` (§4, the paper's Fig. 5 measurement)."""
    table = {(opt, matrices_only, norm): np.zeros((len(depths), len(seeds)))
             for opt, _, matrices_only in panels for norm in norms}
    cells = [(norm, i, j) for norm in norms for i in range(len(depths)) for j in range(len(seeds))]
    for norm, i, j in progress_bar(cells, "one step of a Transformer LM", progress):
        torch.manual_seed(int(seeds[j]))
        model = TinyTransformerLM(vocabulary, int(depths[i]), norm, context=length).to(device)
        windows = random_windows(tokens, batch, length, torch.Generator().manual_seed(int(seeds[j]))).to(device)
        for opt, lr, matrices_only in panels:
            table[opt, matrices_only, norm][i, j] = lm_one_step_update(model, windows, opt, lr,
                                                                        matrices_only)["update"]
    return table


def seq2seq_update_table(norms, depths, seeds, permutation: torch.Tensor, *, optimiser: str = "sgd",
                         lr: float = 1e-2, vocabulary: int = 32, length: int = 15, batch: int = 8,
                         device: torch.device | str = "cpu") -> dict:
    """:func:`seq2seq_one_step_update` (weight matrices only) of an N L-N L :class:`TinyTransformerSeq2Seq`
    for every norm, depth N and seed, on ``batch`` :func:`translation_pairs` (seed s initialises the model and
    draws the pairs). Returns ``{norm: array (depths, seeds)}`` of ‖ΔF‖. Used by chapter ``deepnet-residual``
    (§4, encoder-decoder)."""
    table = {norm: np.zeros((len(depths), len(seeds))) for norm in norms}
    for norm in norms:
        for i, layers in enumerate(depths):
            for j, s in enumerate(seeds):
                torch.manual_seed(int(s))
                model = TinyTransformerSeq2Seq(vocabulary, layers, layers, norm, context=length + 1).to(device)
                source, target = translation_pairs(batch, length, vocabulary, torch.Generator().manual_seed(int(s)),
                                                   permutation)
                table[norm][i, j] = seq2seq_one_step_update(model, source.to(device), target.to(device), optimiser,
                                                            lr, matrices_only=True)["update"]
    return table


def residual_update_draws(width: int, depth: int, draws: int, lr: float, *, batch: int = 64,
                          generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> np.ndarray:
    """One SGD step of ``draws`` independent residual stacks h ← h + relu(h W₁) W₂ / √L at once (the
    "residual" :class:`FFNStack`, W₁ ~ N(0, 2/d), W₂ ~ N(0, 1/d), each draw with its own batch x, y ~ N(0, I)):

        L = Σ_k ½ mean_b ‖F_k(x_kb) − y_kb‖²,   θ_k ← θ_k − η ∂L/∂θ_k,

    so each draw takes exactly its own step (draw k's loss does not depend on θ_j, j ≠ k). Returns the
    ``draws`` updates ‖F_k(x; θ_k') − F_k(x; θ_k)‖ (rms over the batch), shape (draws,): the spread over
    initialisations of the update whose mean chapter ``deepnet-residual`` compares across depths (C2-04),
    batched so that many draws cost about as much as one."""
    shape = (draws, depth, width, width)
    w1 = (torch.randn(shape, generator=generator) * (2 / width) ** 0.5).to(device).requires_grad_()
    w2 = (torch.randn(shape, generator=generator) * (1 / width) ** 0.5).to(device).requires_grad_()
    x = torch.randn(draws, batch, width, generator=generator).to(device)
    y = torch.randn(draws, batch, width, generator=generator).to(device)

    def forward(a, b):
        h = x  # unbind once: indexing a[:, l] in the loop makes backward add L full-size zero gradients
        for a_l, b_l in zip(a.unbind(1), b.unbind(1)):
            h = h + torch.relu(h @ a_l) @ b_l / depth**0.5
        return h

    output = forward(w1, w2)
    loss = 0.5 * (output - y).pow(2).sum(-1).mean(-1).sum()
    g1, g2 = torch.autograd.grad(loss, (w1, w2))
    with torch.no_grad():
        new_output = forward(w1 - lr * g1, w2 - lr * g2)
        return (new_output - output).pow(2).sum(-1).mean(-1).sqrt().cpu().numpy()
