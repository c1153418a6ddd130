"""kitlib.tangent_kernel (the factorised tangent-kernel Gram, issue 17) against the Jacobian contraction and a
loop of torch.autograd.grad: MLPs and CNNs, with and without biases."""

import pytest
import torch
from torch import nn

from kitlib.models import digits_cnn
from kitlib.path_kernel import max_relative_gap, tangent_kernel_gram, tangent_kernel_gram_loop
from kitlib.tangent_kernel import NotFactorisable, factorisable, factorised_gram, layer_factors


def _mlp(bias):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7, bias=bias), nn.Tanh(), nn.Linear(7, 6, bias=bias), nn.ReLU(),
                         nn.Linear(6, 3, bias=bias)).double()


def _cnn(bias):
    torch.manual_seed(1)
    return nn.Sequential(nn.Unflatten(1, (1, 6, 6)), nn.Conv2d(1, 3, 3, padding=1, bias=bias), nn.Tanh(),
                         nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1, bias=bias), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 9, 5, bias=bias)).double()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("build, width", [(_mlp, 5), (_cnn, 36)])
def test_factorised_gram_equals_the_jacobian_contraction(build, width, bias):
    """K = Σ_l (A Aᵀ + 1) ⊙ (Δ Δᵀ) (+ explicit conv gradients) equals J1 J2ᵀ and the autograd loop (float64)."""
    model = build(bias)
    x1, x2 = torch.randn(7, width, dtype=torch.float64), torch.randn(4, width, dtype=torch.float64)
    assert factorisable(model)
    fast = tangent_kernel_gram(model, x1, x2, method="factorised")
    jacobian = tangent_kernel_gram(model, x1, x2, method="jacobian")
    assert fast.shape == jacobian.shape == (7, 4, model[-1].out_features, model[-1].out_features)
    assert max_relative_gap(fast, jacobian) < 1e-12
    assert max_relative_gap(fast, tangent_kernel_gram_loop(model, x1, x2)) < 1e-12
    # the same tensor on both sides (the x2 is x1 shortcut) and small row blocks give the same Gram
    torch.testing.assert_close(factorised_gram(model, x1, x1), tangent_kernel_gram(model, x1, x1, "jacobian"),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(factorised_gram(model, x1, x2, block_rows=2), fast, rtol=0, atol=1e-13)


def test_the_digits_cnn_and_float32():
    torch.manual_seed(2)
    cnn = digits_cnn(channels=4)
    x = torch.rand(5, 64)
    assert max_relative_gap(tangent_kernel_gram(cnn, x, x, "factorised"), tangent_kernel_gram(cnn, x, x, "jacobian")
                            ) < 1e-5


def test_dropping_the_bias_term_or_a_layer_breaks_the_equality():
    """The '+ 1' of the bias and the sum over layers both matter: leaving either out misses by O(1)."""
    model = _mlp(True)
    x = torch.randn(6, 5, dtype=torch.float64)
    reference = tangent_kernel_gram(model, x, x, "jacobian")
    factors = layer_factors(model, x)
    no_bias = sum((a @ a.T)[:, :, None, None] * torch.einsum("ico,jdo->ijcd", d, d) for _, a, d in factors)
    with_bias = sum((a @ a.T + 1)[:, :, None, None] * torch.einsum("ico,jdo->ijcd", d, d) for _, a, d in factors)
    last_only = (lambda _, a, d: (a @ a.T + 1)[:, :, None, None] * torch.einsum("ico,jdo->ijcd", d, d))(*factors[-1])
    assert max_relative_gap(with_bias, reference) < 1e-12
    assert max_relative_gap(no_bias, reference) > 1e-2
    assert max_relative_gap(last_only, reference) > 1e-2


def test_automatic_choice_falls_back_to_the_jacobian():
    """A LayerNorm's parameters and a layer used twice are outside the factorised form: 'auto' falls back and
    still equals the loop; forcing 'factorised' on the shared layer raises."""
    torch.manual_seed(3)
    normed = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)).double()
    assert not factorisable(normed)
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(tangent_kernel_gram(normed, x, x), tangent_kernel_gram_loop(normed, x, x),
                               rtol=0, atol=1e-12)
    shared = nn.Linear(4, 4).double()
    twice = nn.Sequential(shared, nn.Tanh(), shared).double()
    assert factorisable(twice)            # statically fine; the second call is detected at run time
    loop = tangent_kernel_gram_loop(twice, x, x)   # first: torch.func leaves a weight-tied module without grads
    with pytest.raises(NotFactorisable):
        tangent_kernel_gram(twice, x, x, method="factorised")
    torch.testing.assert_close(tangent_kernel_gram(twice, x, x), loop, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        tangent_kernel_gram(twice, x, x, method="fast")


def test_in_place_activations_and_training_mode_layers_fall_back():
    """Two silent failures of the factorised form, now refused: an in-place activation after a Linear layer
    overwrites the recorded output (the sensitivities would be the activation's, O(1) off), and a batch-norm or
    dropout module in training mode couples or randomises the samples. 'auto' then gives exactly what the
    Jacobian path gives (for training-mode batch norm and dropout: the same refusal, since a per-sample gradient
    is not defined; in eval mode: the same Gram); forcing 'factorised' raises NotFactorisable."""
    torch.manual_seed(4)
    x = torch.randn(5, 4, dtype=torch.float64)
    in_place = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 2)).double()
    torch.testing.assert_close(tangent_kernel_gram(in_place, x, x), tangent_kernel_gram(in_place, x, x, "jacobian"),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(tangent_kernel_gram(in_place, x, x), tangent_kernel_gram_loop(in_place, x, x),
                               rtol=0, atol=1e-12)
    with pytest.raises(NotFactorisable):
        tangent_kernel_gram(in_place, x, x, method="factorised")
    for coupled in (nn.BatchNorm1d(6, affine=False), nn.Dropout(0.3)):
        model = nn.Sequential(nn.Linear(4, 6), coupled, nn.Tanh(), nn.Linear(6, 2)).double()
        assert not factorisable(model)
        with pytest.raises(RuntimeError):
            tangent_kernel_gram(model, x, x, method="jacobian")
        with pytest.raises(RuntimeError):
            tangent_kernel_gram(model, x, x)
        with pytest.raises(NotFactorisable):
            tangent_kernel_gram(model, x, x, method="factorised")
        model.eval()                      # eval mode: a fixed per-sample map, factorised again
        assert factorisable(model)
        torch.testing.assert_close(tangent_kernel_gram(model, x, x), tangent_kernel_gram(model, x, x, "jacobian"),
                                   rtol=0, atol=1e-12)
