"""Training for chapter ``class-imbalance``: many losses at once on one long-tailed data set, CIFAR-10-LT, and the
long-run boundary of a linear model on separable data.

- :func:`train_loss_arms`: R copies of one small network (a :class:`kitlib.models.BatchedMLP`, or
  :class:`BatchedCNN`), each trained full-batch with its own loss (:func:`kitlib.imbalance.member_losses`:
  plain, reweighted, focal, logit-adjusted at any τ); the test logits and the balanced accuracy at checkpoints
  come back together (:class:`ArmsRun`).
- :func:`train_cifar_arms`: the same comparison on CIFAR-10-LT with a ResNet-18 (full profile, when CIFAR-10
  is in the data cache).
- :func:`long_run_shifts`: gradient descent on a linear logistic model, one column per arm (plain, importance
  weights, logit-adjusted loss; without and with weight decay), and how far each arm's boundary sits from
  plain training's over time — whether an arm's effect fades as the weights grow (Byrd & Lipton, 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .imbalance import balanced_accuracy, balancing_weights, log_prior, member_losses, per_class_recall, posthoc_adjust
from .models import BatchedMLP, resnet18_cifar


@dataclass(frozen=True)
class LossArm:
    """One loss: cross-entropy with logit adjustment ``tau``, focal exponent ``gamma``, and class weights
    :func:`~kitlib.imbalance.balancing_weights` when ``reweight``."""

    name: str
    tau: float = 0.0
    gamma: float = 0.0
    reweight: bool = False


@dataclass
class ArmsRun:
    """What :func:`train_loss_arms` returns. ``test_logits`` (R, n_test, K) at the end of training,
    ``y_test`` (n_test,); ``checkpoints`` (C,) steps and ``balanced`` (C, R) the test balanced accuracy of the
    raw argmax there; ``log_prior`` (K,) of the training set; ``train_accuracy`` (R,) at the end (None if not
    measured)."""

    arms: tuple
    test_logits: torch.Tensor
    y_test: torch.Tensor
    checkpoints: list
    balanced: np.ndarray
    log_prior: torch.Tensor
    train_accuracy: np.ndarray | None = None

    def index(self, name: str) -> int:
        return [a.name for a in self.arms].index(name)

    def predictions(self, name: str, posthoc_tau: float = 0.0) -> torch.Tensor:
        """argmax of arm ``name``'s test logits, adjusted post hoc by ``posthoc_tau`` (0: the raw argmax)."""
        return posthoc_adjust(self.test_logits[self.index(name)], self.log_prior, posthoc_tau).argmax(-1)

    def balanced_accuracy(self, name: str, posthoc_tau: float = 0.0) -> float:
        return balanced_accuracy(self.predictions(name, posthoc_tau), self.y_test, self.log_prior.numel()).item()

    def recall(self, name: str, posthoc_tau: float = 0.0) -> np.ndarray:
        """Per-class test recall (K,)."""
        return per_class_recall(self.predictions(name, posthoc_tau), self.y_test, self.log_prior.numel()).numpy()


PLAIN, SECOND_INIT = "plain CE", "plain CE, 2nd init"


def logit_adjusted_arm_name(tau: float) -> str:
    return f"LA loss τ={tau:g}"


def comparison_arms(taus) -> list[LossArm]:
    """The arms of chapter ``class-imbalance``: plain cross-entropy twice (two initialisations: the noise floor of
    a paired comparison), importance-reweighted, focal (γ = 2), and the logit-adjusted loss at every τ > 0."""
    return ([LossArm(PLAIN), LossArm(SECOND_INIT), LossArm("reweighted", reweight=True), LossArm("focal", gamma=2.0)]
            + [LossArm(logit_adjusted_arm_name(t), tau=float(t)) for t in taus if t > 0])


def tau_curve(runs, taus, form: str) -> np.ndarray:
    """Test balanced accuracy (len(runs), len(taus)) against τ: ``form`` "post-hoc" adjusts the plain arm's logits
    by τ; "loss" takes the arm trained with the logit-adjusted loss at τ (τ = 0: the plain arm)."""
    if form not in ("post-hoc", "loss"):
        raise ValueError(f"form must be 'post-hoc' or 'loss', got {form!r}")
    def one(run, t):
        if form == "post-hoc":
            return run.balanced_accuracy(PLAIN, t)
        return run.balanced_accuracy(PLAIN if t == 0 else logit_adjusted_arm_name(t))
    return np.array([[one(run, t) for t in taus] for run in runs])


class BatchedCNN(nn.Module):
    """R independent copies of :func:`kitlib.models.digits_cnn` run as grouped convolutions:
    (R, n, 64) → view (n, R, 8, 8) → conv 3×3 (R groups) → tanh → conv 3×3 stride 2 → tanh → a linear layer
    per member."""

    def __init__(self, members: int, channels: int = 8, num_classes: int = 10):
        super().__init__()
        self.members, self.channels = members, channels
        self.conv1 = nn.Conv2d(members, members * channels, 3, padding=1, groups=members)
        self.conv2 = nn.Conv2d(members * channels, members * channels, 3, stride=2, padding=1, groups=members)
        self.head = BatchedMLP(members, channels * 16, num_classes, depth=0, batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, n, _ = x.shape
        h = x.permute(1, 0, 2).reshape(n, r, 8, 8)
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(h))))               # (n, R·c, 4, 4), member-major
        return self.head(h.reshape(n, r, self.channels * 16).permute(1, 0, 2))


def _class_weights(arms, counts: torch.Tensor) -> torch.Tensor:
    weights = balancing_weights(counts).float()
    return torch.stack([weights if a.reweight else torch.ones(len(counts)) for a in arms])


def train_loss_arms(arms, x_train, y_train, x_test, y_test, *, steps: int, lr: float, width: int = 64,
                    model: str = "mlp", weight_decay: float = 0.0, checkpoints=(), seed: int = 0,
                    device="cpu") -> ArmsRun:
    """Train one network per arm on the same long-tailed data, full-batch Adam(W) for ``steps`` steps.

    The members start from independent initialisations (seeded by ``seed``), so two arms with the same loss
    measure the seed-to-seed noise of a paired comparison. ``model``: ``"mlp"`` (64 → width → K, ReLU) or
    ``"cnn"`` (:class:`BatchedCNN`). Chapter ``class-imbalance``, section 3."""
    device = torch.device(device)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    counts = torch.bincount(y_train, minlength=num_classes)
    prior = log_prior(counts).float()
    r = len(arms)
    tau = torch.tensor([a.tau for a in arms], device=device)
    gamma = torch.tensor([a.gamma for a in arms], device=device)
    class_weights = _class_weights(arms, counts).to(device)
    torch.manual_seed(seed)
    net = (BatchedMLP(r, x_train.shape[1], num_classes, width=width, depth=1, batch_norm=False) if model == "mlp"
           else BatchedCNN(r, num_classes=num_classes)).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    x, y = x_train.to(device).expand(r, -1, -1), y_train.to(device)
    xt, yt = x_test.to(device).expand(r, -1, -1), y_test.to(device)
    marks, balanced = sorted({c for c in checkpoints if c <= steps} | {steps}), []
    for step in range(1, steps + 1):
        loss = member_losses(net(x), y, prior.to(device), tau, class_weights, gamma).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step in marks:
            with torch.no_grad():
                logits = net(xt)
            balanced.append(balanced_accuracy(logits.argmax(-1), yt, num_classes).cpu().numpy())
    with torch.no_grad():
        train_accuracy = (net(x).argmax(-1) == y).double().mean(-1).cpu().numpy()
    return ArmsRun(tuple(arms), logits.cpu(), y_test.cpu(), marks, np.array(balanced), prior, train_accuracy)


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32×32 crops of the 4-pixel zero-padded images and random horizontal flips (per image)."""
    n = len(images)
    padded = nn.functional.pad(images, (4, 4, 4, 4))
    dy, dx = (torch.randint(0, 9, (n,), generator=generator).to(images.device) for _ in range(2))
    span = torch.arange(32, device=images.device)
    rows, cols = (dy[:, None] + span)[:, None, :, None], (dx[:, None] + span)[:, None, None, :]
    crops = padded[torch.arange(n, device=images.device)[:, None, None, None],
                   torch.arange(3, device=images.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def train_cifar_arms(arms, x_train, y_train, x_test, y_test, *, epochs: int, width: int = 32,
                     batch_size: int = 128, lr: float = 0.1, weight_decay: float = 5e-4, seed: int = 0,
                     device="cpu") -> ArmsRun:
    """One ResNet-18 (:func:`kitlib.models.resnet18_cifar`) per arm on CIFAR-10-LT, trained as the reference code
    does in outline (SGD, momentum 0.9, Nesterov, weight decay, random crops and flips) for ``epochs`` epochs with
    a cosine learning rate; bfloat16 autocast on CUDA. Full profile of chapter ``class-imbalance``."""
    device = torch.device(device)
    num_classes = int(y_test.max()) + 1
    counts = torch.bincount(y_train, minlength=num_classes)
    prior = log_prior(counts).float()
    class_weights = _class_weights(arms, counts)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    x_train, x_test = (x_train - mean).to(device), (x_test - mean).to(device)
    y_train = y_train.to(device)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    logits = []
    for r, arm in enumerate(arms):
        torch.manual_seed(seed + r)
        net = resnet18_cifar(num_classes, width=width).to(device)
        optimiser = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                       pct_start=0.1, anneal_strategy="cos")
        one = (torch.tensor([arm.tau], device=device), class_weights[r: r + 1].to(device),
               torch.tensor([arm.gamma], device=device))
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(y_train), generator=generator).to(device)
            for batch in order.split(batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    out = net(_augment(x_train[batch], generator)).float()
                loss = member_losses(out[None], y_train[batch], prior.to(device), *one).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
        net.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits.append(torch.cat([net(chunk).float().cpu() for chunk in x_test.split(1000)]))
    test_logits = torch.stack(logits)
    balanced = balanced_accuracy(test_logits.argmax(-1), y_test, num_classes).numpy()[None]
    return ArmsRun(tuple(arms), test_logits, y_test.cpu(), [epochs], balanced, prior)


# -- the long run on separable data -------------------------------------------------------------------------
def separable_blobs(n_major: int, n_minor: int, rng: np.random.Generator, centre: float = 2.0,
                    spread=(0.7, 1.0), gap: float = 0.5):
    """Two Gaussian blobs at (∓centre, 0) with standard deviations ``spread``, class 0 (majority) on the left;
    points with |x₁| < gap (or on the wrong side) are redrawn, so the classes are separable with a slab of
    width 2·gap between them. Returns x (n, 2) float64 and y (n,) in {0, 1}."""
    def blob(n, sign):
        points = np.empty((0, 2))
        while len(points) < n:
            draw = rng.normal([sign * centre, 0.0], spread, size=(2 * n, 2))
            points = np.r_[points, draw[sign * draw[:, 0] > gap]]
        return points[:n]

    x = np.r_[blob(n_major, -1), blob(n_minor, 1)]
    return x, np.r_[np.zeros(n_major, dtype=np.int64), np.ones(n_minor, dtype=np.int64)]


def logistic_gradient_descent(x, y, *, sample_weights, offsets, weight_decay, steps: int, lr: float, checkpoints):
    """Full-batch gradient descent from zero on A binary logistic models at once, arm a minimising

    .. math:: \\frac1N\\sum_iw_{a,i}\\log\\big(1+e^{-s_i(w_a^\\top x_i+b_a+\\delta_a)}\\big)
       +\\frac{\\lambda_a}2\\|w_a\\|^2,

    :math:`s_i=2y_i-1`. ``sample_weights`` (N, A), ``offsets`` (A,) (δ = τ log(π₁/π₀) gives the logit-adjusted
    loss), ``weight_decay`` (A,) (λ; the bias b is not decayed). Returns the steps (C,) and the parameters
    (C, 3, A) — rows w₁, w₂, b — at the checkpoints."""
    n = len(y)
    s = 2.0 * np.asarray(y) - 1.0
    sx = s[:, None] * np.c_[x, np.ones(n)]                                     # (N, 3)
    shift = s[:, None] * np.asarray(offsets, dtype=float)[None, :]              # (N, A)
    decay = np.asarray(weight_decay, dtype=float)[None, :] * np.array([[1.0], [1.0], [0.0]])
    params = np.zeros((3, shift.shape[1]))
    marks, kept = set(checkpoints) | {steps}, []
    for step in range(1, steps + 1):
        sigma = 1.0 / (1.0 + np.exp(sx @ params + shift))                     # σ(−margin)
        params -= lr * (decay * params - sx.T @ (sample_weights * sigma) / n)
        if step in marks:
            kept.append((step, params.copy()))
    return np.array([k for k, _ in kept]), np.stack([p for _, p in kept])


def max_margin_separator(x, y) -> np.ndarray:
    """The hard-margin separator of the data with the bias as a constant feature, :math:`\\min\\tfrac12\\|v\\|^2`
    subject to :math:`s_i\\,v^\\top(x_i,1)\\ge1` (SLSQP): the direction gradient descent on the logistic loss
    converges to on separable data, whatever the example weights (Soudry et al., 2018). Returns v = (w₁, w₂, b)."""
    from scipy.optimize import minimize

    s = 2.0 * np.asarray(y) - 1.0
    sx = s[:, None] * np.c_[x, np.ones(len(y))]
    start = np.linalg.lstsq(sx, np.ones(len(y)), rcond=None)[0]
    start = start / max(1e-12, (sx @ start).min())                        # feasible if the data are separable
    result = minimize(lambda v: 0.5 * v @ v, start, jac=lambda v: v, method="SLSQP",
                      constraints=[{"type": "ineq", "fun": lambda v: sx @ v - 1, "jac": lambda v: sx}],
                      options={"ftol": 1e-12, "maxiter": 500})
    if not result.success:
        raise RuntimeError(f"max-margin QP failed: {result.message}")
    return result.x


@dataclass
class LongRun:
    """``steps`` (C,); ``shift[name]`` and ``shift_decayed[name]`` (C,): how far (along x₁, at x₂ = 0) the
    boundary of importance weights / logit-adjusted loss / post-hoc adjustment sits from plain training's,
    without and with weight decay; ``plain_crossing`` (C,) and ``max_margin_crossing`` (that of
    :func:`max_margin_separator`, where every unregularised arm's boundary is headed); ``norm`` (C,) plain
    training's ‖w‖."""

    steps: np.ndarray
    shift: dict
    shift_decayed: dict
    plain_crossing: np.ndarray
    max_margin_crossing: float
    norm: np.ndarray

    def remaining(self, name: str, decayed: bool = False, decades: float = 2.0) -> float:
        """shift at the last step / shift at ``10**-decades`` of it: near 1 if the effect persists."""
        values = (self.shift_decayed if decayed else self.shift)[name]
        early = int(np.argmin(np.abs(np.log10(self.steps) - (np.log10(self.steps[-1]) - decades))))
        return float(values[-1] / values[early])


ARM_NAMES = ("importance weights", "logit-adjusted loss", "post-hoc")


def long_run_shifts(x, y, *, steps: int, lr: float, weight_decay: float, checkpoints) -> LongRun:
    """Plain, importance-weighted (:math:`w_y=N/(2n_y)`) and logit-adjusted (τ = 1) logistic regression trained
    by :func:`logistic_gradient_descent` without and with ``weight_decay``, and post-hoc adjustment of the plain
    model (bias − log(π₁/π₀)). Chapter ``class-imbalance``, section 5."""
    y = np.asarray(y)
    n1, n0 = y.sum(), len(y) - y.sum()
    log_odds = float(np.log(n1 / n0))
    weights = np.where(y == 1, len(y) / (2 * n1), len(y) / (2 * n0))
    ones = np.ones_like(weights)
    sample_weights = np.stack([ones, weights, ones] * 2, axis=1)
    steps_, params = logistic_gradient_descent(
        x, y, sample_weights=sample_weights, offsets=[0.0, 0.0, log_odds] * 2,
        weight_decay=[0.0] * 3 + [weight_decay] * 3, steps=steps, lr=lr, checkpoints=checkpoints)
    crossing = -params[:, 2] / params[:, 0]                                        # (C, A)
    posthoc = -(params[:, 2] - log_odds) / params[:, 0]

    def shifts(plain, arms):
        return {name: crossing[:, plain] - values for name, values in
                zip(ARM_NAMES, (crossing[:, arms[0]], crossing[:, arms[1]], posthoc[:, plain]))}

    limit = max_margin_separator(x, y)
    svm_crossing = float(-limit[2] / limit[0])
    return LongRun(steps_, shifts(0, (1, 2)), shifts(3, (4, 5)), crossing[:, 0], svm_crossing,
                   np.hypot(params[:, 0, 0], params[:, 1, 0]))


def log_checkpoints(steps: int, per_decade: int = 4) -> list[int]:
    """About ``per_decade`` log-spaced steps per decade from 10 to ``steps``, plus ``steps`` / 100."""
    marks = np.round(np.logspace(1, np.log10(steps), int(per_decade * np.log10(steps / 10)) + 1)).astype(int)
    return sorted(set(marks.tolist()) | {max(1, steps // 100), steps})
