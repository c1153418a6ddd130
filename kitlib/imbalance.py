"""Class imbalance: smoothed metrics and the losses they lead to, logit adjustment, long-tailed splits.

Chapter ``class-imbalance`` (Su, kexue.fm/archives/7708 and /7615; Menon et al., ICLR 2021).

- Smoothed metrics of a binary classifier with :math:`p_i=\\sigma(z_i)`: accuracy
  :math:`\\mathrm{acc}=\\frac1N\\sum_i[y_ip_i+(1-y_i)(1-p_i)]` and F1 :math:`=2\\sum_iy_ip_i/(\\sum_iy_i+\\sum_ip_i)`,
  and the cross-entropy gradients they reduce to once the factor :math:`q_i` (the probability of the correct class)
  is dropped (:func:`accuracy_gradient_from_cross_entropy`, :func:`f1_gradient_from_weighted_cross_entropy`).
- Logit adjustment: the loss :math:`\\mathrm{CE}(z+\\tau\\log\\pi,\\,y)` and the post-hoc rule
  :math:`\\arg\\max_y z_y-\\tau\\log\\pi_y` (reference code: google-research/logit_adjustment).
- Reweighting, focal loss, and one loss that covers all four per member of a batched model
  (:func:`member_losses`).
- :func:`long_tailed_split`: a data set made long-tailed on an exponential profile, with a balanced test set.
- Balanced accuracy and per-class recall.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


# -- smoothed metrics and the cross-entropy they become -------------------------------------------------
def smoothed_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:math:`\\frac1N\\sum_i[y_ip_i+(1-y_i)(1-p_i)]`, :math:`p=\\sigma(z)`: accuracy with the 0/1 decision replaced
    by the probability. ``logits`` (N,), ``targets`` (N,) in {0, 1}; a scalar."""
    p, y = torch.sigmoid(logits), targets.to(logits.dtype)
    return (y * p + (1 - y) * (1 - p)).mean()


def smoothed_f1(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:math:`F_1=2\\sum_iy_ip_i/(\\sum_iy_i+\\sum_ip_i)` (true positives and predicted positives counted with
    probabilities). ``logits`` (N,), ``targets`` (N,) in {0, 1}; a scalar."""
    p, y = torch.sigmoid(logits), targets.to(logits.dtype)
    return 2 * (y * p).sum() / (y.sum() + p.sum())


def correct_class_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:math:`q_i=p_i` for positives and :math:`1-p_i` for negatives, (N,)."""
    p, y = torch.sigmoid(logits), targets.to(logits.dtype)
    return y * p + (1 - y) * (1 - p)


def _cross_entropy_gradient(logits: torch.Tensor, targets: torch.Tensor, weights=None) -> torch.Tensor:
    """:math:`\\partial/\\partial z_i` of :math:`\\sum_iw_i\\,\\mathrm{CE}(z_i,y_i)` by autograd (binary CE on
    logits)."""
    z = logits.detach().clone().requires_grad_(True)
    losses = F.binary_cross_entropy_with_logits(z, targets.to(z.dtype), reduction="none")
    (losses if weights is None else weights * losses).sum().backward()
    return z.grad


def accuracy_gradient_from_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Su's reading of cross-entropy as smoothed accuracy with one factor dropped:

    .. math:: \\frac{\\partial\\,\\mathrm{acc}}{\\partial z_i}=\\frac{q_i}{N}\\Big(-\\frac{\\partial\\,\\mathrm{CE}_i}
       {\\partial z_i}\\Big),\\qquad \\frac{\\partial\\,\\mathrm{acc}}{\\partial z_i}=\\frac{(2y_i-1)p_i(1-p_i)}{N}.

    Returns the right-hand side, built from the cross-entropy's autograd gradient (N,); gradient *ascent* on the
    accuracy is descent on the cross-entropy with each example's step scaled by :math:`q_i`."""
    q = correct_class_probability(logits, targets).detach()
    return q * (-_cross_entropy_gradient(logits, targets)) / len(logits)


def f1_weights(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:math:`w_i=1-F_1/2` for positives and :math:`F_1/2` for negatives (F1 the current smoothed F1), (N,)."""
    f1 = smoothed_f1(logits, targets).detach()
    y = targets.to(logits.dtype)
    return y * (1 - f1 / 2) + (1 - y) * f1 / 2


def f1_gradient_from_weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                                            weights: torch.Tensor | None = None) -> torch.Tensor:
    """The smoothed F1's gradient as a weighted cross-entropy's, times the dropped factor :math:`q_i`:

    .. math:: \\frac{\\partial F_1}{\\partial z_i}=\\frac{(2y_i-F_1)\\,p_i(1-p_i)}{S}=\\frac2S\\,q_i\\Big(
       -\\frac{\\partial\\,(w_i\\mathrm{CE}_i)}{\\partial z_i}\\Big),\\quad S=\\sum_iy_i+\\sum_ip_i,

    with :math:`w` from :func:`f1_weights` held constant. ``weights`` overrides them (the unit test passes
    wrong ones). Returns the right-hand side (N,)."""
    w = f1_weights(logits, targets) if weights is None else weights
    p, y = torch.sigmoid(logits.detach()), targets.to(logits.dtype)
    s = y.sum() + p.sum()
    q = correct_class_probability(logits, targets).detach()
    return 2 / s * q * (-_cross_entropy_gradient(logits, targets, w))


def autograd_gradient(metric, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:math:`\\partial\\,\\mathrm{metric}/\\partial z` by autograd, (N,)."""
    z = logits.detach().clone().requires_grad_(True)
    metric(z, targets).backward()
    return z.grad


# -- logit adjustment, reweighting, focal loss ----------------------------------------------------------
def log_prior(counts) -> torch.Tensor:
    """:math:`\\log\\pi_y=\\log(n_y/\\sum_kn_k)` from class counts (K,), float64."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    return torch.log(counts / counts.sum())


def logit_adjusted_loss(logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor,
                        tau: float = 1.0) -> torch.Tensor:
    """Menon et al.'s logit-adjusted softmax cross-entropy, the mean over examples of

    .. math:: -\\log\\frac{e^{z_y+\\tau\\log\\pi_y}}{\\sum_ke^{z_k+\\tau\\log\\pi_k}}

    (google-research/logit_adjustment adds :math:`\\log(\\pi^\\tau+10^{-12})`; the same for :math:`\\pi>0`).
    ``logits`` (N, K), ``targets`` (N,), ``log_prior`` (K,)."""
    return F.cross_entropy(logits + tau * log_prior.to(logits), targets)


def posthoc_adjust(logits: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment: :math:`z_y-\\tau\\log\\pi_y`, whose argmax is the prediction. (…, K)."""
    return logits - tau * log_prior.to(logits)


def balancing_weights(counts) -> torch.Tensor:
    """Importance weights :math:`w_y=N/(Kn_y)` (scikit-learn's "balanced": the weighted class totals are equal
    and the mean weight over the training set is 1), (K,), float64."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    return counts.sum() / (len(counts) * counts)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Lin et al.'s focal loss, mean over examples of :math:`-(1-p_{y})^\\gamma\\log p_{y}` (no α)."""
    log_p = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (-(1 - log_p.exp()) ** gamma * log_p).mean()


def member_losses(logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor, tau: torch.Tensor,
                  class_weights: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """One loss per member of a batched model, each a special case of

    .. math:: \\ell_r=\\frac1N\\sum_iw_{r,y_i}\\,(1-p_{r,i})^{\\gamma_r}\\,\\big(-\\log p_{r,i}\\big),\\qquad
       p_{r,i}=\\mathrm{softmax}(z_{r,i}+\\tau_r\\log\\pi)_{y_i}:

    plain cross-entropy (w = 1, γ = 0, τ = 0), reweighting (w = :func:`balancing_weights`), focal (γ > 0),
    logit-adjusted (τ > 0). ``logits`` (R, N, K), ``targets`` (N,), ``log_prior`` (K,), ``tau`` (R,),
    ``class_weights`` (R, K), ``gamma`` (R,); returns (R,)."""
    adjusted = logits + tau.to(logits)[:, None, None] * log_prior.to(logits)
    log_p = F.log_softmax(adjusted, dim=-1).gather(-1, targets.expand(len(logits), -1).unsqueeze(-1)).squeeze(-1)
    modulation = (1 - log_p.exp()).clamp_min(0) ** gamma.to(logits)[:, None]
    weights = class_weights.to(logits)[:, targets]
    return (weights * modulation * -log_p).mean(dim=1)


# -- metrics -----------------------------------------------------------------------------------------------
def per_class_recall(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of each class, :math:`\\#\\{\\hat y=y=k\\}/\\#\\{y=k\\}`, (K,) (NaN for a class absent from targets).
    ``predictions`` may carry leading member dimensions (..., N): the result is then (..., K)."""
    hits = (predictions == targets).to(torch.float64)
    one_hot = F.one_hot(targets, num_classes).to(torch.float64)             # (N, K)
    return (hits @ one_hot) / one_hot.sum(0)


def balanced_accuracy(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean per-class recall (1 − Menon et al.'s balanced error), (...)."""
    return per_class_recall(predictions, targets, num_classes).mean(-1)


# -- long-tailed data ----------------------------------------------------------------------------------------
def long_tailed_counts(num_classes: int, largest: int, ratio: float) -> np.ndarray:
    """Exponential profile :math:`n_k=\\lfloor n_{\\max}\\,\\rho^{-k/(K-1)}\\rfloor`, k = 0 … K−1 (at least 1 each),
    so that :math:`n_0/n_{K-1}=\\rho` up to rounding down — the profile of CIFAR-10-LT (with 5000 and ρ = 100 it
    gives the 12 406 training images of the reference code)."""
    k = np.arange(num_classes)
    return np.maximum(1, np.floor(largest * float(ratio) ** (-k / (num_classes - 1)) + 1e-9)).astype(np.int64)


def long_tailed_indices(y, ratio: float, generator: np.random.Generator, largest: int):
    """Indices of a long-tailed subset of labels ``y`` (:func:`long_tailed_counts` per class, drawn at random)
    and, per class, the shuffled indices left over: ``(train_indices, leftovers)``."""
    y = np.asarray(y)
    num_classes = int(y.max()) + 1
    counts = long_tailed_counts(num_classes, largest, ratio)
    shuffled = [generator.permutation(np.flatnonzero(y == k)) for k in range(num_classes)]
    if any(len(idx) < n for idx, n in zip(shuffled, counts)):
        raise ValueError(f"a class has fewer than the {largest} examples the profile asks for")
    train = np.concatenate([idx[:n] for idx, n in zip(shuffled, counts)])
    return generator.permutation(train), [idx[n:] for idx, n in zip(shuffled, counts)]


def long_tailed_split(x, y, ratio: float, generator: np.random.Generator, largest: int = 100,
                      test_per_class: int | None = None):
    """Make ``(x, y)`` long-tailed: class k keeps ``long_tailed_counts(K, largest, ratio)[k]`` training
    examples (class 0 the largest, class K−1 the smallest, largest/smallest = ``ratio``), drawn at random with
    ``generator``; the test set takes ``test_per_class`` of the remaining examples of every class (default: as
    many as the scarcest class has left), so it is balanced.

    Returns ``(x_train, y_train, x_test, y_test)`` as tensors. Chapter ``class-imbalance`` (digits)."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    train, leftovers = long_tailed_indices(y.numpy(), ratio, generator, largest)
    left = min(len(idx) for idx in leftovers)
    per_class = left if test_per_class is None else test_per_class
    if not 0 < per_class <= left:
        raise ValueError(f"a balanced test set of {per_class} per class is impossible: the scarcest class has "
                         f"{left} examples left (lower `largest`)")
    test = generator.permutation(np.concatenate([idx[:per_class] for idx in leftovers]))
    return x[train], y[train], x[test], y[test]


def long_tailed_digits(ratio: float, generator: np.random.Generator, largest: int = 100):
    """scikit-learn's digits (pixels / 16) made long-tailed with :func:`long_tailed_split`, then standardised
    with the long-tailed training set's mean and std (+0.1, so constant pixels stay finite). Float32 tensors."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x_train, y_train, x_test, y_test = long_tailed_split(torch.tensor(x / 16, dtype=torch.float32),
                                                         torch.tensor(y), ratio, generator, largest)
    mean, std = x_train.mean(0), x_train.std(0) + 0.1
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


# -- Gaussian mixtures with a known Bayes rule --------------------------------------------------------------
def sample_mixture(means: torch.Tensor, sigma: float, counts, generator: torch.Generator):
    """``counts[k]`` points from :math:`\\mathcal N(\\mu_k,\\sigma^2I)` per class; returns x (n, d) float64, y (n,)."""
    xs, ys = [], []
    for k, n in enumerate(counts):
        xs.append(means[k] + sigma * torch.randn(int(n), means.shape[1], generator=generator, dtype=torch.float64))
        ys.append(torch.full((int(n),), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def mixture_class_log_likelihood(x: torch.Tensor, means: torch.Tensor, sigma: float) -> torch.Tensor:
    """:math:`\\log p(x\\mid y)` up to a constant shared by the classes, :math:`-\\|x-\\mu_y\\|^2/2\\sigma^2`, (n, K).

    Its argmax is the Bayes rule for the balanced error; adding :math:`\\log\\pi_y` gives the Bayes rule for the
    error under the prior π."""
    return -torch.cdist(x, means.to(x)) ** 2 / (2 * sigma**2)


def triangle_means(radius: float = 1.5, num_classes: int = 3) -> torch.Tensor:
    """Class means on a circle of ``radius``, the first at the top: (K, 2) float64."""
    angles = math.pi / 2 + 2 * math.pi * torch.arange(num_classes, dtype=torch.float64) / num_classes
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def fit_linear_softmax(x: torch.Tensor, y: torch.Tensor, *, log_prior: torch.Tensor | None = None, tau: float = 0.0,
                       class_weights: torch.Tensor | None = None, bias: bool = True, max_iter: int = 500):
    """Minimise :math:`\\frac1N\\sum_iw_{y_i}\\,\\mathrm{CE}(Wx_i+b+\\tau\\log\\pi,\\,y_i)` over (W, b) with L-BFGS
    (float64, strong Wolfe line search, to gradient norm 1e-10). The loss is convex, so this is *the*
    minimiser. With a free bias b the logit-adjusted minimiser is the plain one with b shifted by −τ log π:
    the two forms of adjustment coincide here (``bias=False`` fixes b = 0, and they no longer do). Returns
    ``score(x) -> logits`` (n, K) without the τ log π term. Chapter ``class-imbalance``, section 2."""
    x = x.to(torch.float64)
    num_classes = int(y.max()) + 1
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    intercept = torch.zeros(num_classes, dtype=torch.float64, requires_grad=bias)
    offset = 0.0 if log_prior is None else tau * log_prior.to(torch.float64)
    sample_weights = None if class_weights is None else class_weights.to(torch.float64)[y]
    parameters = [weight, intercept] if bias else [weight]
    optimiser = torch.optim.LBFGS(parameters, lr=1, max_iter=max_iter, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        losses = F.cross_entropy(x @ weight + intercept + offset, y, reduction="none")
        loss = losses.mean() if sample_weights is None else (sample_weights * losses).mean()
        loss.backward()
        return loss

    optimiser.step(closure)
    weight, intercept = weight.detach(), intercept.detach()
    return lambda points: points.to(torch.float64) @ weight + intercept
