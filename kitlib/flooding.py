"""Flooding (Ishida et al., ICML 2020): the flooded loss and the paper's experiments, chapter ``flooding``.

- flooded loss  L̃(θ) = |L(θ) − b| + b  =  L above the flood level b, 2b − L below it,
  so ∇L̃ = sign(L − b) ∇L: below b every step goes *up* the loss                          (paper, Eq. 1)
- :func:`flooded_step_check`: one step of the book's trainer on L̃ against finite differences (claim F1)
- :func:`train_flood_grid`: the official synthetic demo, every (seed, b) pair at once, optionally with a
  weight decay λ per run (the gradient becomes sign(L − b)∇L + λθ, as torch's SGD/Adam ``weight_decay``)
- :func:`sign_flip_rate`: how often sign(L − b) changes between consecutive steps (1 = strict alternation)

Su's analysis of the flooded phase (descent + ascent = descent on ‖∇L‖²) is in :mod:`kitlib.flooding_analysis`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .autodiff import central_difference_gradient, flat_parameters
from .data import Split
from .models import BatchedMLP
from .train import History, fit


def flooded_loss(loss: torch.Tensor, flood_level: float | torch.Tensor) -> torch.Tensor:
    """L̃ = |L − b| + b (elementwise, so a vector of per-member losses gets per-member flood levels)."""
    return (loss - flood_level).abs() + flood_level


def member_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each member: logits (R, n, C), labels (R, n) → (R,)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return ce.view(y.shape).mean(dim=1)


def flooded_step_check(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, flood_level: float, lr: float,
                       objective: Callable[[torch.Tensor, float], torch.Tensor] = flooded_loss,
                       h: float = 1e-5) -> dict[str, float]:
    """One step of :func:`kitlib.train.fit` (SGD, step ``lr``, cross-entropy on (x, y), differentiating
    ``objective(L, b)``) against an independent computation of the paper's objective (claim F1):

    - ``step error``  = ‖Δθ + lr·∇̂L̃‖ / ‖lr·∇̂L̃‖, with ∇̂L̃ the central difference (step h) of L̃ written
      piecewise — L(θ) if L(θ) > b, else 2b − L(θ) — in float arithmetic, no autograd;
    - ``value error`` = |objective(L, b) − piecewise L̃| at the starting point.

    ``model`` is not changed (a copy is trained). Use float64 and a smooth model, so that the central
    difference is accurate to O(h²) + O(eps/h), about 1e-10 in relative terms. Returns both errors and L."""
    theta, unflatten = flat_parameters(model)

    def loss_at(vector: torch.Tensor) -> float:
        logits = torch.func.functional_call(model, unflatten(vector), (x,))
        return F.cross_entropy(logits, y).item()

    def piecewise(vector: torch.Tensor) -> float:
        value = loss_at(vector)
        return value if value > flood_level else 2 * flood_level - value

    trained = copy.deepcopy(model)
    cross_entropy = lambda m, batch: F.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
    fit(trained, torch.optim.SGD(trained.parameters(), lr=lr), cross_entropy, lambda epoch: [(x, y)], 1,
        objective=lambda loss: objective(loss, flood_level), progress=False)
    moved = flat_parameters(trained)[0] - theta
    expected = -lr * central_difference_gradient(piecewise, theta, h=h)
    loss = loss_at(theta)
    with torch.no_grad():
        value = objective(torch.tensor(loss, dtype=torch.float64), flood_level).item()
    return {"step error": ((moved - expected).norm() / expected.norm()).item(),
            "value error": abs(value - piecewise(theta)), "loss": loss}


def label_noise_entropy(noise: float, num_classes: int) -> float:
    """Cross-entropy (nats) of the Bayes predictor on noisy labels when the clean label is certain:
    H = −(1−η) log(1−η) − η log(η/(K−1)). A training loss below it can only come from memorising flips,
    which makes it a natural reference for the flood level b."""
    if not 0 <= noise < 1:
        raise ValueError("noise must be in [0, 1)")
    terms = [(1 - noise) * np.log(1 - noise)] + ([noise * np.log(noise / (num_classes - 1))] if noise > 0 else [])
    return float(-sum(terms))


def first_crossing(losses: np.ndarray, flood_level: float) -> int | None:
    """Index of the first step whose training loss is below the flood level (None if never)."""
    below = np.flatnonzero(np.asarray(losses) < flood_level)
    return int(below[0]) if below.size else None


def ascent_fraction(losses: np.ndarray, flood_level: float) -> float:
    """Fraction of steps from the first crossing on whose loss is below b (ascent steps); NaN if no crossing."""
    start = first_crossing(losses, flood_level)
    if start is None:
        return float("nan")
    return float(np.mean(np.asarray(losses)[start:] < flood_level))


def sign_flip_rate(losses: np.ndarray, flood_level: float) -> float:
    """From the first crossing of b on, the fraction of consecutive step pairs (t, t+1) with
    sign(L_t − b) ≠ sign(L_{t+1} − b): 1 for strict descent/ascent alternation (Su's two-step picture),
    2p(1 − p) for signs drawn independently with ascent probability p. NaN with fewer than 2 steps."""
    start = first_crossing(losses, flood_level)
    if start is None or len(losses) - start < 2:
        return float("nan")
    below = np.asarray(losses)[start:] < flood_level
    return float(np.mean(below[1:] != below[:-1]))


def shuffled_sign_flip_rate(losses: np.ndarray, flood_level: float, rng: np.random.Generator,
                            repeats: int = 20) -> float:
    """The null of :func:`sign_flip_rate`: the same signs (same ascent fraction) in random order, averaged
    over ``repeats`` permutations; ≈ 2p(1 − p) ≤ ½."""
    start = first_crossing(losses, flood_level)
    if start is None or len(losses) - start < 2:
        return float("nan")
    below = np.asarray(losses)[start:] < flood_level
    rates = []
    for _ in range(repeats):
        b = rng.permutation(below)
        rates.append(np.mean(b[1:] != b[:-1]))
    return float(np.mean(rates))


@dataclass
class FloodGrid:
    """Training runs of every (data seed, flood level) pair; arrays indexed [..., seed, level]."""

    flood_levels: np.ndarray          # (B,)
    train_loss_steps: np.ndarray      # (steps, S, B): the training-mode loss each step's sign is decided on
    eval_epochs: np.ndarray           # (E,)
    evals: dict[str, np.ndarray]      # name → (E, S, B): train/val/test loss and accuracy (eval mode)
    model: BatchedMLP                 # the trained members, member index = seed_index · B + level_index
    weight_decays: np.ndarray | None = None  # (B,): λ of each level's runs (None or 0: none)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, seed_index: int, level_index: int) -> torch.Tensor:
        """Class probabilities (n, C) of one trained member at inputs x (n, d), eval mode."""
        device = next(self.model.parameters()).device
        member = seed_index * len(self.flood_levels) + level_index
        return self.model.forward_member(member, x.to(device)).softmax(-1).cpu()

    def final(self, name: str) -> np.ndarray:
        """(S, B) values of an evaluation metric after the last epoch."""
        return self.evals[name][-1]

    def early_stopped(self, name: str, level_index: int, by: str = "val_acc") -> np.ndarray:
        """(S,) value of metric ``name`` for level ``level_index`` at each seed's evaluation with the best
        ``by`` (first of ties): the run stopped early on the validation set, among the evaluated epochs."""
        best = np.argmax(self.evals[by][:, :, level_index], axis=0)               # (S,)
        return self.evals[name][best, np.arange(len(best)), level_index]

    def chosen_level_index(self, candidates: Sequence[int] | None = None) -> np.ndarray:
        """Per seed, the flood level with the best final validation accuracy among ``candidates``
        (indices into ``flood_levels``; default all). Ties go to the first candidate."""
        idx = np.asarray(candidates if candidates is not None else range(len(self.flood_levels)))
        val = self.final("val_acc")[:, idx]
        return idx[np.argmax(val, axis=1)]


def add_member_weight_decay(model: BatchedMLP, decay: torch.Tensor) -> None:
    """Weight decay λ_r per member of a batched model: every parameter's gradient becomes g + λ_r θ_r (a
    backward hook, so it is added after the flooding sign), which is what ``torch.optim.SGD``/``Adam`` with
    ``weight_decay=λ_r`` do to a separate model. ``decay``: (R,), the members being the first axis of every
    parameter. Used by :func:`train_flood_grid` for the weight-decay arm of chapter ``flooding``."""
    for p in model.parameters():
        p.register_hook(lambda grad, p=p: grad + decay.view(-1, *[1] * (p.dim() - 1)) * p.detach())


def arm_accuracies(grid: FloodGrid, flooded: Sequence[int], decayed: Sequence[int] = (),
                   metric: str = "test_acc", plain: int = 0) -> dict[str, np.ndarray]:
    """Per seed (S,), the final ``metric`` of each arm of the paper's comparison (its W/E/F columns):

    - ``plain``: b = 0 (level index ``plain``) trained to the end;
    - ``flooding``: the level among ``flooded`` with the best final validation accuracy;
    - ``early stopping``: the plain run at its evaluation with the best validation accuracy;
    - ``weight decay``: the level among ``decayed`` (b = 0, λ > 0) with the best final validation accuracy
      (NaN when there is none). Ties go to the first candidate."""
    rows = np.arange(grid.final(metric).shape[0])
    final = grid.final(metric)
    out = {"plain": final[:, plain], "flooding": final[rows, grid.chosen_level_index(flooded)],
           "early stopping": grid.early_stopped(metric, plain)}
    out["weight decay"] = final[rows, grid.chosen_level_index(decayed)] if len(decayed) else np.full(len(rows), np.nan)
    return out


def train_flood_grid(splits: Sequence[Split], flood_levels: Sequence[float], *, width: int, depth: int,
                     epochs: int, lr: float, optimiser: str = "sgd", momentum: float = 0.9,
                     batch_size: int | None = None, eval_every: int = 1, device: torch.device | str = "cpu",
                     weight_decays: Sequence[float] | None = None, progress: bool = True,
                     desc: str = "flooding grid") -> FloodGrid:
    """Train one :class:`IshidaMLP` per (split, flood level) — all at once as a :class:`BatchedMLP` — with
    cross-entropy, flooded at level b (b = 0 is plain training), as in the official demo.

    ``batch_size=None`` is full-batch (the demo's batch 200 > n = 100); with a batch size the sign of each
    step is decided on each member's batch loss. ``weight_decays`` (one λ per level, default 0) adds λθ to
    the gradient of every parameter of that level's runs, after the flooding sign — what torch's SGD and
    Adam do with ``weight_decay=λ``. Members share nothing, so each behaves as a separate run. Evaluation
    (eval mode, BN running statistics) reports, per member, the loss and accuracy on train, validation and
    test (noisy labels) and the clean train and test accuracy."""
    device = torch.device(device)
    S, B = len(splits), len(flood_levels)
    R = S * B
    first = splits[0]

    def per_member(name: str) -> torch.Tensor:  # (R, n, ...) with member r = s * B + b
        return torch.stack([getattr(sp, name) for sp in splits]).repeat_interleave(B, dim=0).to(device)

    x_tr, y_tr = per_member("x_train"), per_member("y_train")
    sets = {name: (per_member(f"x_{name}"), per_member(f"y_{name}")) for name in ("train", "val", "test")}
    y_test_clean = per_member("y_test_clean")
    levels = torch.tensor(list(flood_levels), dtype=torch.float32, device=device).repeat(S)
    y_train_clean = per_member("y_train_clean")
    model = BatchedMLP(R, x_tr.shape[-1], first.num_classes, width=width, depth=depth).to(device)
    decays = np.zeros(B) if weight_decays is None else np.asarray(weight_decays, dtype=float)
    if decays.shape != (B,):
        raise ValueError("weight_decays needs one value per flood level")
    if decays.any():
        add_member_weight_decay(model, torch.tensor(decays, dtype=torch.float32, device=device).repeat(S))
    if optimiser == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    elif optimiser == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        raise ValueError(f"unknown optimiser {optimiser!r}; use 'sgd' or 'adam'")
    n = x_tr.shape[1]

    def batches(epoch: int):
        if batch_size is None or batch_size >= n:
            yield x_tr, y_tr
            return
        order = torch.argsort(torch.rand(R, n, device=device), dim=1)
        for start in range(0, n, batch_size):
            idx = order[:, start:start + batch_size]
            yield (torch.gather(x_tr, 1, idx[..., None].expand(-1, -1, x_tr.shape[-1])),
                   torch.gather(y_tr, 1, idx))

    def loss_fn(model, batch):
        x, y = batch
        return member_cross_entropy(model(x), y)

    def evaluate(model):
        out, predicted = {}, {}
        for name, (x, y) in sets.items():
            logits = torch.cat([model(x[:, i:i + 4096]) for i in range(0, x.shape[1], 4096)], dim=1)
            out[f"{name}_loss"] = member_cross_entropy(logits, y)
            out[f"{name}_acc"] = 100 * (logits.argmax(-1) == y).float().mean(dim=1)
            predicted[name] = logits.argmax(-1)
        out["test_clean_acc"] = 100 * (predicted["test"] == y_test_clean).float().mean(dim=1)
        out["train_clean_acc"] = 100 * (predicted["train"] == y_train_clean).float().mean(dim=1)
        return out

    history: History = fit(model, opt, loss_fn, batches, epochs, objective=lambda L: flooded_loss(L, levels),
                           evaluate=evaluate, eval_every=eval_every, progress=progress, desc=desc)
    steps = history.step_array("loss").reshape(-1, S, B)
    evals = {k: history.eval_array(k).reshape(-1, S, B) for k in history.evals if k != "epoch"}
    return FloodGrid(np.asarray(flood_levels, dtype=float), steps, np.asarray(history.evals["epoch"]), evals, model,
                     decays)


def train_classifier_flooding(make_model, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                              y_test: torch.Tensor, flood_levels: Sequence[float], *, epochs: int, lr: float = 0.1,
                              momentum: float = 0.9, batch_size: int = 128, eval_samples: int = 10000,
                              device: torch.device | str = "cpu", progress: bool = True) -> dict[float, History]:
    """Minibatch SGD on an image classifier (the paper's Fig. 1 setting: ResNet-18, no augmentation), once per
    flood level, with the sign of each step decided on the *batch* loss. Evaluates train and test loss and
    accuracy (on at most ``eval_samples`` images each) after every epoch. bf16 autocast on CUDA."""
    device = torch.device(device)
    histories = {}
    for level in flood_levels:
        model = make_model().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        n = len(x_train)

        def batches(epoch: int):
            order = torch.randperm(n)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                yield x_train[idx].to(device, non_blocking=True), y_train[idx].to(device, non_blocking=True)

        def loss_fn(model, batch):
            x, y = batch
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                return F.cross_entropy(model(x).float(), y)

        def evaluate(model):
            out = {}
            for name, (x, y) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items():
                x, y = x[:eval_samples], y[:eval_samples]
                losses, correct = [], []
                for start in range(0, len(x), 1000):
                    xb, yb = x[start:start + 1000].to(device), y[start:start + 1000].to(device)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                        logits = model(xb).float()
                    losses.append(F.cross_entropy(logits, yb, reduction="sum"))
                    correct.append((logits.argmax(-1) == yb).sum())
                out[f"{name}_loss"] = torch.stack(losses).sum() / len(x)
                out[f"{name}_acc"] = 100 * torch.stack(correct).sum().float() / len(x)
            return out

        histories[float(level)] = fit(model, opt, loss_fn, batches, epochs,
                                      objective=lambda L, b=level: flooded_loss(L, b), evaluate=evaluate,
                                      progress=progress, desc=f"flood level {level}")
    return histories
