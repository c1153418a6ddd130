"""Chapter class-imbalance: the smoothed-metric identities (CI1, CI2) against closed forms and against plausible
wrong versions, logit adjustment and the other losses against direct computations, the long-tailed split, the
batched training and the long run on separable data."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, recall_score
from torch.nn import functional as F

from kitlib.imbalance import (accuracy_gradient_from_cross_entropy, autograd_gradient, balanced_accuracy,
                              balancing_weights, correct_class_probability, f1_gradient_from_weighted_cross_entropy,
                              f1_weights, fit_linear_softmax, focal_loss, log_prior, logit_adjusted_loss,
                              long_tailed_counts, long_tailed_digits, long_tailed_split, member_losses,
                              mixture_class_log_likelihood, per_class_recall, posthoc_adjust, sample_mixture,
                              smoothed_accuracy, smoothed_f1, triangle_means)
from kitlib.imbalance_training import (ARM_NAMES, PLAIN, BatchedCNN, LossArm, _augment, comparison_arms,
                                       log_checkpoints, logistic_gradient_descent, long_run_shifts,
                                       max_margin_separator, separable_blobs, tau_curve, train_cifar_arms,
                                       train_loss_arms)
from kitlib.models import digits_cnn

TOLERANCE = 1e-12      # the claims' bound for CI1 and CI2


def logits_and_labels(n=400, positives=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(n, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g) < positives).long()
    return z, y


def relative_gap(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


# -- CI1: smoothed accuracy --------------------------------------------------------------------------------
def test_smoothed_accuracy_gradient_is_cross_entropy_times_q():
    """CI1: ∂acc/∂z_i = (2y_i − 1)p_i(1 − p_i)/N (closed form) = q_i(−∂CE_i/∂z_i)/N."""
    z, y = logits_and_labels()
    p = torch.sigmoid(z)
    closed_form = (2 * y - 1) * p * (1 - p) / len(z)
    assert relative_gap(closed_form, autograd_gradient(smoothed_accuracy, z, y)) < TOLERANCE
    assert relative_gap(closed_form, accuracy_gradient_from_cross_entropy(z, y)) < TOLERANCE


def test_smoothed_accuracy_without_the_factor_q_fails_the_tolerance():
    """CI1 can fail: cross-entropy's own gradient (q dropped), or q taken as p for every example."""
    z, y = logits_and_labels()
    exact = autograd_gradient(smoothed_accuracy, z, y)
    p = torch.sigmoid(z)
    assert relative_gap(exact, (y - p) / len(z)) > 0.1
    assert relative_gap(exact, p * (y - p) / len(z)) > 0.1


# -- CI2: smoothed F1 --------------------------------------------------------------------------------------
def test_smoothed_f1_gradient_is_a_weighted_cross_entropy_times_q():
    """CI2: ∂F1/∂z_i = (2y_i − F1)p_i(1 − p_i)/S (closed form) = (2/S)q_i(−∂(w_iCE_i)/∂z_i)."""
    z, y = logits_and_labels()
    p = torch.sigmoid(z)
    s = y.sum() + p.sum()
    f1 = 2 * (y * p).sum() / s
    closed_form = (2 * y - f1) * p * (1 - p) / s
    assert relative_gap(closed_form, autograd_gradient(smoothed_f1, z, y)) < TOLERANCE
    assert relative_gap(closed_form, f1_gradient_from_weighted_cross_entropy(z, y)) < TOLERANCE
    assert torch.allclose(f1_weights(z, y), torch.where(y == 1, 1 - f1 / 2, f1 / 2))


@pytest.mark.parametrize("wrong", ["swapped", "unweighted", "inverse frequency"])
def test_smoothed_f1_with_a_wrong_weighting_fails_the_tolerance(wrong):
    """CI2 can fail: the F1 weights swapped between the classes, no weights, or inverse-frequency weights."""
    z, y = logits_and_labels()
    exact = autograd_gradient(smoothed_f1, z, y)
    w = f1_weights(z, y)
    frequency = torch.where(y == 1, y.float().mean(), 1 - y.float().mean()).double()
    weights = {"swapped": 1 - w, "unweighted": torch.ones_like(w), "inverse frequency": 1 / frequency}[wrong]
    assert relative_gap(exact, f1_gradient_from_weighted_cross_entropy(z, y, weights=weights)) > 0.05


def test_smoothed_metrics_and_the_correct_class_probability_against_loops():
    z, y = logits_and_labels(n=50)
    p = [1 / (1 + math.exp(-v)) for v in z.tolist()]
    labels = y.tolist()
    q = [pi if yi == 1 else 1 - pi for pi, yi in zip(p, labels)]
    assert torch.allclose(correct_class_probability(z, y), torch.tensor(q, dtype=torch.float64))
    assert smoothed_accuracy(z, y).item() == pytest.approx(sum(q) / len(q), rel=1e-12)
    tp = sum(pi for pi, yi in zip(p, labels) if yi == 1)
    assert smoothed_f1(z, y).item() == pytest.approx(2 * tp / (sum(labels) + sum(p)), rel=1e-12)


# -- logit adjustment and the other losses -----------------------------------------------------------------
def test_logit_adjusted_loss_against_a_direct_computation():
    """mean_i −log(e^{z_iy + τ log π_y} / Σ_k e^{z_ik + τ log π_k}), computed in numpy, and the reference code's
    form (log(π^τ + 1e-12) added to the logits)."""
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(30, 5)), rng.integers(0, 5, size=30)
    prior = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    for tau in (0.0, 1.0, 1.7):
        adjusted = logits + tau * np.log(prior)
        direct = np.mean([-(adjusted[i, t] - np.log(np.exp(adjusted[i]).sum())) for i, t in enumerate(targets)])
        ours = logit_adjusted_loss(torch.tensor(logits), torch.tensor(targets), torch.tensor(np.log(prior)), tau)
        reference = F.cross_entropy(torch.tensor(logits + np.log(prior**tau + 1e-12)), torch.tensor(targets))
        assert ours.item() == pytest.approx(direct, abs=1e-12)
        assert ours.item() == pytest.approx(reference.item(), abs=1e-9)


def test_posthoc_adjustment_is_the_argmax_of_posterior_over_prior():
    """argmax_y z_y − τ log π_y = argmax_y softmax(z)_y / π_y^τ."""
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(200, 4)))
    prior = torch.tensor([0.6, 0.3, 0.08, 0.02], dtype=torch.float64)
    for tau in (0.5, 1.0, 2.0):
        adjusted = posthoc_adjust(logits, prior.log(), tau)
        assert torch.allclose(adjusted, logits - tau * prior.log())
        assert torch.equal(adjusted.argmax(-1), (logits.softmax(-1) / prior**tau).argmax(-1))


def test_log_prior_and_balancing_weights():
    counts = torch.tensor([100, 30, 10, 1])
    assert torch.allclose(log_prior(counts).exp(), counts.double() / counts.sum())
    w = balancing_weights(counts)
    assert torch.allclose(w * counts, torch.full((4,), counts.sum() / 4.0, dtype=torch.float64))
    assert (w[torch.repeat_interleave(torch.arange(4), counts)]).mean().item() == pytest.approx(1.0)


def test_focal_loss_against_a_loop():
    """mean −(1 − p_y)^γ log p_y; γ = 0 is cross-entropy."""
    rng = np.random.default_rng(2)
    logits, targets = torch.tensor(rng.normal(size=(20, 3))), torch.tensor(rng.integers(0, 3, size=20))
    p = logits.softmax(-1)
    direct = np.mean([-(1 - p[i, t].item()) ** 2 * math.log(p[i, t].item()) for i, t in enumerate(targets)])
    assert focal_loss(logits, targets, 2.0).item() == pytest.approx(direct, rel=1e-12)
    assert focal_loss(logits, targets, 0.0).item() == pytest.approx(F.cross_entropy(logits, targets).item())


def test_member_losses_are_the_single_losses():
    """Each member of the batched loss equals the loss it stands for: plain, reweighted (mean of w_y·CE),
    focal, logit-adjusted."""
    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.normal(size=(4, 25, 3)))
    targets = torch.tensor(rng.integers(0, 3, size=25))
    counts = torch.bincount(targets, minlength=3)
    prior, weights = log_prior(counts), balancing_weights(counts)
    losses = member_losses(logits, targets, prior, torch.tensor([0.0, 0.0, 0.0, 1.0]),
                           torch.stack([torch.ones(3), weights, torch.ones(3), torch.ones(3)]).double(),
                           torch.tensor([0.0, 0.0, 2.0, 0.0]))
    assert losses[0].item() == pytest.approx(F.cross_entropy(logits[0], targets).item(), rel=1e-12)
    weighted = (weights[targets] * F.cross_entropy(logits[1], targets, reduction="none")).mean()
    assert losses[1].item() == pytest.approx(weighted.item(), rel=1e-12)
    assert losses[2].item() == pytest.approx(focal_loss(logits[2], targets, 2.0).item(), rel=1e-12)
    assert losses[3].item() == pytest.approx(logit_adjusted_loss(logits[3], targets, prior, 1.0).item(), rel=1e-12)


def test_recall_and_balanced_accuracy_match_scikit_learn():
    rng = np.random.default_rng(4)
    targets, predictions = rng.integers(0, 5, size=300), rng.integers(0, 5, size=300)
    t, p = torch.tensor(targets), torch.tensor(predictions)
    assert np.allclose(per_class_recall(p, t, 5).numpy(), recall_score(targets, predictions, average=None))
    assert balanced_accuracy(p, t, 5).item() == pytest.approx(balanced_accuracy_score(targets, predictions))
    stacked = torch.stack([p, t])                                  # members: leading dimension
    assert torch.allclose(balanced_accuracy(stacked, t, 5), torch.tensor([balanced_accuracy(p, t, 5).item(), 1.0],
                                                                          dtype=torch.float64))


# -- long-tailed data --------------------------------------------------------------------------------------
def test_long_tailed_counts_follow_the_exponential_profile():
    counts = long_tailed_counts(10, 100, 10)
    assert counts[0] == 100 and counts[-1] == 10
    assert np.array_equal(counts, [math.floor(100 * 10 ** (-k / 9) + 1e-9) for k in range(10)])
    assert long_tailed_counts(10, 5000, 100).sum() == 12406        # CIFAR-10-LT's size in the reference code
    assert long_tailed_counts(10, 100, 1000)[-1] == 1              # at least one example per class


def test_long_tailed_split_counts_balance_and_disjointness():
    """Training counts on the profile, a balanced test set, no example in both, reproducible from the generator."""
    y = np.repeat(np.arange(4), [50, 60, 55, 70])
    x = torch.arange(len(y)).unsqueeze(1)                          # each row names its example
    x_tr, y_tr, x_te, y_te = long_tailed_split(x, y, 8, np.random.default_rng(0), largest=40)
    assert np.array_equal(torch.bincount(y_tr).numpy(), long_tailed_counts(4, 40, 8))
    assert np.array_equal(torch.bincount(y_te).numpy(), [10] * 4)   # the scarcest class (50 − 40) sets the size
    assert not set(x_tr[:, 0].tolist()) & set(x_te[:, 0].tolist())
    assert np.array_equal(y[x_tr[:, 0].numpy()], y_tr.numpy())
    again = long_tailed_split(x, y, 8, np.random.default_rng(0), largest=40)
    assert torch.equal(again[0], x_tr) and torch.equal(again[2], x_te)
    with pytest.raises(ValueError):
        long_tailed_split(x, y, 8, np.random.default_rng(0), largest=50)
    with pytest.raises(ValueError):
        long_tailed_split(x, y, 8, np.random.default_rng(0), largest=40, test_per_class=11)


def test_long_tailed_digits_are_standardised_on_the_training_set():
    x_tr, y_tr, x_te, y_te = long_tailed_digits(100, np.random.default_rng(0))
    assert torch.bincount(y_tr).tolist() == long_tailed_counts(10, 100, 100).tolist()
    assert len(set(torch.bincount(y_te).tolist())) == 1
    assert x_tr.mean(0).abs().max() < 1e-5 and x_tr.dtype == torch.float32


# -- the mixture ---------------------------------------------------------------------------------------------
def test_mixture_log_likelihood_against_scipy():
    """−‖x − μ_y‖²/2σ² differs from log N(x; μ_y, σ²I) by a constant shared by the classes."""
    from scipy.stats import multivariate_normal

    means, sigma = triangle_means(1.5), 0.8
    x, _ = sample_mixture(means, sigma, [5, 5, 5], torch.Generator().manual_seed(0))
    ours = mixture_class_log_likelihood(x, means, sigma).numpy()
    scipy = np.stack([multivariate_normal(m.numpy(), sigma**2 * np.eye(2)).logpdf(x.numpy()) for m in means], 1)
    assert np.allclose(ours - scipy, (ours - scipy)[0, 0])
    assert np.allclose(np.linalg.norm(means.numpy(), axis=1), 1.5)


def test_logit_adjusted_minimiser_is_the_shifted_plain_one_only_with_a_bias():
    """With a free bias the adjusted loss's minimiser is plain's with b − log π (the forms coincide); without a
    bias they differ."""
    means = triangle_means(1.5)
    x, y = sample_mixture(means, 1.0, [400, 80, 16], torch.Generator().manual_seed(1))
    prior = log_prior(torch.bincount(y))

    def centred(z):
        return z - z.mean(-1, keepdim=True)

    for bias, close in ((True, True), (False, False)):
        plain = fit_linear_softmax(x, y, bias=bias)
        adjusted = fit_linear_softmax(x, y, log_prior=prior, tau=1.0, bias=bias)
        gap = (centred(adjusted(x)) - centred(posthoc_adjust(plain(x), prior))).abs().max().item()
        assert (gap < 1e-5) == close, (bias, gap)


# -- batched training --------------------------------------------------------------------------------------
def test_batched_cnn_member_is_a_digits_cnn():
    """Member r of the grouped-convolution CNN computes what digits_cnn with member r's weights computes."""
    torch.manual_seed(0)
    batched, x = BatchedCNN(3), torch.randn(3, 7, 64)
    out = batched(x)
    for r in range(3):
        single = digits_cnn()
        with torch.no_grad():
            single[1].weight.copy_(batched.conv1.weight[8 * r: 8 * r + 8])
            single[1].bias.copy_(batched.conv1.bias[8 * r: 8 * r + 8])
            single[3].weight.copy_(batched.conv2.weight[8 * r: 8 * r + 8])
            single[3].bias.copy_(batched.conv2.bias[8 * r: 8 * r + 8])
            single[6].weight.copy_(batched.head.weights[0][r].T)
            single[6].bias.copy_(batched.head.biases[0][r, 0])
        assert torch.allclose(single(x[r]), out[r], atol=1e-6)


def test_train_loss_arms_and_the_tau_curve():
    x_tr, y_tr, x_te, y_te = long_tailed_digits(10, np.random.default_rng(0))
    arms = comparison_arms((0.0, 1.0))
    run = train_loss_arms(arms, x_tr, y_tr, x_te, y_te, steps=30, lr=0.01, width=16, checkpoints=(10,), seed=0)
    assert run.test_logits.shape == (len(arms), len(y_te), 10) and run.checkpoints == [10, 30]
    assert run.balanced.shape == (2, len(arms))
    assert run.balanced[-1, run.index(PLAIN)] == pytest.approx(run.balanced_accuracy(PLAIN))
    recall = run.recall(PLAIN, 1.0)
    assert recall.mean() == pytest.approx(run.balanced_accuracy(PLAIN, 1.0))
    curves = {form: tau_curve([run], [0.0, 1.0], form) for form in ("post-hoc", "loss")}
    assert curves["post-hoc"][0, 0] == curves["loss"][0, 0] == run.balanced_accuracy(PLAIN)
    assert curves["loss"][0, 1] == run.balanced_accuracy("LA loss τ=1")
    cnn = train_loss_arms(arms[:2], x_tr, y_tr, x_te, y_te, steps=2, lr=0.01, model="cnn", seed=0)
    assert cnn.test_logits.shape == (2, len(y_te), 10)


def test_augment_crops_and_flips():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = _augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    padded = F.pad(images, (4, 4, 4, 4))
    for i in range(2):                                           # each output is a crop of its padded image
        found = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                 if torch.equal(out[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy:dy + 32, dx:dx + 32]))]
        assert found


def test_train_cifar_arms_runs_on_tiny_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, 32, 32, generator=g), torch.arange(40) % 4
    run = train_cifar_arms([LossArm(PLAIN), LossArm("LA", tau=1.0)], x, y, x[:8], y[:8], epochs=1, width=4,
                           batch_size=20, seed=0)
    assert run.test_logits.shape == (2, 8, 4) and np.isfinite(run.balanced).all()


# -- the long run ------------------------------------------------------------------------------------------
def test_logistic_gradient_descent_one_step_and_equivalences():
    """One step from zero against a direct computation; uniform weights equal the plain arm; an offset δ with a
    free bias is the plain problem with the bias started at δ."""
    rng = np.random.default_rng(0)
    x, y = separable_blobs(30, 5, rng)
    n, s = len(y), 2.0 * y - 1
    _, params = logistic_gradient_descent(x, y, sample_weights=np.ones((n, 1)), offsets=[0.0], weight_decay=[0.0],
                                          steps=1, lr=0.3, checkpoints=[1])
    direct = 0.3 * np.mean((s * 0.5)[:, None] * np.c_[x, np.ones(n)], axis=0)   # σ(0) = ½
    assert np.allclose(params[-1, :, 0], direct)
    _, both = logistic_gradient_descent(x, y, sample_weights=np.ones((n, 2)), offsets=[0.0, 0.0],
                                        weight_decay=[0.0, 0.0], steps=50, lr=0.3, checkpoints=[50])
    assert np.allclose(both[-1, :, 0], both[-1, :, 1])
    assert not (separable_blobs(30, 5, rng)[0][:30, 0] > -0.5).any()          # the slab is empty


def test_long_run_shifts_fade_without_decay_and_persist_with_it():
    """CI6 on a short run: shifts are positive (towards the majority class), remaining() reads the right
    checkpoints, and the decayed arms keep their shift."""
    x, y = separable_blobs(100, 10, np.random.default_rng(0))
    steps = 20_000
    long_run = long_run_shifts(x, y, steps=steps, lr=0.5, weight_decay=0.05, checkpoints=log_checkpoints(steps))
    assert 200 in long_run.steps and long_run.steps[-1] == steps
    for name in ARM_NAMES:
        values = long_run.shift[name]
        assert (values > 0).all()
        i = list(long_run.steps).index(200)
        assert long_run.remaining(name) == pytest.approx(values[-1] / values[i])
        assert long_run.remaining(name) < 0.9 < long_run.remaining(name, decayed=True)
    assert abs(long_run.plain_crossing[-1] - long_run.max_margin_crossing) < 0.2


def test_max_margin_separator_beats_random_directions():
    """The QP's v has minimum margin 1, and no random direction separates the (bias-augmented) data with a larger
    normalised margin."""
    x, y = separable_blobs(60, 8, np.random.default_rng(3))
    v = max_margin_separator(x, y)
    sx = (2.0 * y - 1)[:, None] * np.c_[x, np.ones(len(y))]
    assert (sx @ v).min() == pytest.approx(1.0, abs=1e-8)
    directions = np.random.default_rng(0).normal(size=(20000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    assert (sx @ directions.T).min(0).max() <= 1 / np.linalg.norm(v) + 1e-9
