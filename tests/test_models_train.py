"""kitlib.models and kitlib.train: the batched ensemble equals separate models; the loop's contract."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from kitlib.data import synthetic_split
from kitlib.flooding import train_classifier_flooding, train_flood_grid
from kitlib.models import BatchedMLP, IshidaMLP, resnet18_cifar
from kitlib.train import DivergenceError, check_finite, fit


def _pair(members=3, width=8, depth=3):
    torch.manual_seed(0)
    separate = [IshidaMLP(2, 2, width=width, depth=depth) for _ in range(members)]
    batched = BatchedMLP(members, 2, 2, width=width, depth=depth)
    for r, mlp in enumerate(separate):
        batched.load_member(r, mlp)
    return separate, batched


def test_batched_mlp_equals_separate_models_in_train_and_eval_mode():
    """Each member is an IshidaMLP: outputs, BN running statistics and gradients agree."""
    separate, batched = _pair()
    x = torch.randn(3, 17, 2)
    y = torch.randint(0, 2, (3, 17))
    out = batched(x)
    separate_out = [mlp(x[r]) for r, mlp in enumerate(separate)]   # one training-mode pass each
    for r, mlp in enumerate(separate):
        torch.testing.assert_close(out[r], separate_out[r], rtol=1e-5, atol=1e-6)
        bn = [m for m in mlp if isinstance(m, torch.nn.BatchNorm1d)][0]
        torch.testing.assert_close(batched.running_var0[r, 0], bn.running_var)
    # gradients of the summed member losses equal each model's own gradient
    losses = torch.stack([F.cross_entropy(out[r], y[r]) for r in range(3)])
    losses.sum().backward()
    for r, mlp in enumerate(separate):
        F.cross_entropy(separate_out[r], y[r]).backward()
        torch.testing.assert_close(batched.weights[1].grad[r], mlp[3].weight.grad.T, rtol=1e-4, atol=1e-6)
    batched.eval()
    for mlp in separate:
        mlp.eval()
    out = batched(x)
    for r, mlp in enumerate(separate):
        torch.testing.assert_close(out[r], mlp(x[r]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batched.forward_member(r, x[r]), mlp(x[r]), rtol=1e-5, atol=1e-6)


def test_batched_mlp_rejects_wrong_member_count():
    with pytest.raises(ValueError, match="members=3"):
        BatchedMLP(3, 2, 2, width=4)(torch.randn(2, 5, 2))


def test_resnet18_cifar_shapes():
    model = resnet18_cifar(10, width=4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_check_finite_names_the_step():
    check_finite(torch.tensor([0.5, 1.0]), 3)
    with pytest.raises(DivergenceError, match="step 7.*lower the learning rate"):
        check_finite(torch.tensor(float("nan")), 7)


def test_fit_stops_on_divergence_at_the_right_step():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        return model(batch).sum() * (float("inf") if calls["n"] == 4 else 1.0)

    with pytest.raises(DivergenceError, match="step 3"):
        fit(model, opt, loss_fn, lambda e: [torch.ones(2, 1)], epochs=10, progress=False)


def test_fit_history_evaluations_and_grad_norm():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)      # parameters stay put: norms are checkable
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    loss_fn = lambda m, b: F.mse_loss(m(b[0]), b[1])
    history = fit(model, opt, loss_fn, lambda e: [(x, y), (x, y)], epochs=5,
                  evaluate=lambda m: {"mse": loss_fn(m, (x, y))}, eval_every=2, track_grad_norm=True,
                  progress=False)
    assert history.evals["epoch"] == [0, 2, 4, 5]
    assert history.step_array("loss").shape == (10,)
    grads = torch.autograd.grad(loss_fn(model, (x, y)), list(model.parameters()))
    expected = sum((g**2).sum() for g in grads).item()
    assert history.step_array("grad_norm_sq")[0] == pytest.approx(expected, rel=1e-5)


def test_train_flood_grid_pins_flooded_members_at_their_level():
    torch.manual_seed(0)
    splits = [synthetic_split("sinusoid2d", np.random.default_rng(s), n_test=50) for s in range(2)]
    grid = train_flood_grid(splits, (0.0, 0.4), width=32, depth=2, epochs=150, lr=0.05, eval_every=50,
                            progress=False)
    assert grid.train_loss_steps.shape == (150, 2, 2)
    assert grid.evals["test_acc"].shape == (4, 2, 2)
    assert np.all(np.abs(grid.train_loss_steps[-20:, :, 1].mean(0) - 0.4) < 0.02)
    assert np.all(grid.train_loss_steps[-1, :, 0] < 0.4)
    proba = grid.predict_proba(torch.randn(5, 2), 1, 1)
    torch.testing.assert_close(proba.sum(-1), torch.ones(5))


def test_chosen_level_index_prefers_first_of_ties():
    from kitlib.flooding import FloodGrid

    val = np.array([[[80.0, 85.0, 85.0]], [[90.0, 70.0, 75.0]]]).transpose(1, 0, 2)  # (E=1, S=2, B=3)
    grid = FloodGrid(np.array([0.0, 0.1, 0.2]), np.zeros((1, 2, 3)), np.array([1]), {"val_acc": val}, None)
    assert grid.chosen_level_index().tolist() == [1, 0]
    assert grid.chosen_level_index([1, 2]).tolist() == [1, 2]


def test_train_classifier_flooding_runs_an_epoch_of_resnet():
    x, y = torch.rand(12, 3, 32, 32), torch.randint(0, 10, (12,))
    histories = train_classifier_flooding(lambda: resnet18_cifar(10, width=4), x, y, x[:6], y[:6], (0.0, 0.5),
                                          epochs=1, batch_size=6, progress=False)
    assert set(histories) == {0.0, 0.5}
    assert histories[0.5].evals["epoch"] == [0, 1]
    assert histories[0.5].step_array("loss").shape == (2,)


def test_progress_bar_honours_tqdm_disable(monkeypatch):
    from kitlib.train import progress_bar

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(range(3), "x").disable
    monkeypatch.setenv("TQDM_DISABLE", "")
    assert not progress_bar(range(3), "x").disable
    assert progress_bar(range(3), "x", progress=False).disable
    assert list(progress_bar(range(3), "x", progress=False)) == [0, 1, 2]
