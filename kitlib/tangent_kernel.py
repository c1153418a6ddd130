r"""The tangent-kernel Gram without per-sample Jacobians (chapter ``sgd-svm``, claim P3-speed; issue 17).

The tangent kernel of a network with C outputs is the C × C block

    K(x, x')_{cd} = ⟨∇_θ f_c(x), ∇_θ f_d(x')⟩ = Σ_l ⟨∇_{θ_l} f_c(x), ∇_{θ_l} f_d(x')⟩,

a sum over the parametrised layers l. For a dense layer z = W a + b the per-sample gradient is an outer product,
∂f_c/∂W = δ_c aᵀ and ∂f_c/∂b = δ_c with δ_c = ∂f_c/∂z (the back-propagated output sensitivity), so

    ⟨∇_{W,b} f_c(x), ∇_{W,b} f_d(x')⟩ = (a(x)·a(x') + 1) · (δ_c(x)·δ_d(x')),

i.e. the layer adds (A Aᵀ + 1) ⊙ (Δ_c Δ_dᵀ) — built from the activations A (n, fan-in) and sensitivities
Δ (n, C, fan-out), with no tensor of the parameters' size P. A convolution shares its weights over positions
p, so its per-sample gradient Σ_p δ_c[:, p] ⊗ patch_p (F.unfold) has only the layer's (small) parameter count
and is formed explicitly, layer by layer. Costs: forward + C backward passes of the batch, then
O(n1 n2 C² Σ_l fan-out_l) for the dense layers, against O(n1 n2 C² P) for contracting full Jacobians.

Assumptions (checked; :func:`factorisable` says whether they hold): every parameter is the weight or bias of an
``nn.Linear`` or a (groups = 1, zero-padded, integer-padded) ``nn.Conv2d``, each such module is called once per
forward, samples do not interact (no batch-norm or dropout module in training mode: :func:`factorisable` says
no), and no recorded layer input or output is modified in place after the layer ran (e.g. by
``nn.ReLU(inplace=True)``, which would turn the recorded output into the activation's; checked by the tensors'
version counters, :class:`NotFactorisable` otherwise, so that the ``auto`` method falls back to the Jacobians).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

FACTORISABLE = (nn.Linear, nn.Conv2d)
# modules whose training-mode forward couples the samples of a batch (batch statistics) or is random (dropout,
# RReLU): the per-sample gradient that the factorised form (and the Jacobian path) assume is not defined
TRAINING_MODE_COUPLED = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.RReLU)


def factorisable(model: nn.Module) -> bool:
    """True when every parameter of ``model`` is the weight or bias of a supported layer and no batch-norm,
    dropout or RReLU module is in training mode (see module docstring); whether each layer runs once per forward,
    and whether a recorded tensor is modified in place, is checked when the Gram is built."""
    owned = set()
    for module in model.modules():
        if module.training and isinstance(module, TRAINING_MODE_COUPLED):
            return False
        if isinstance(module, nn.Conv2d):
            if (module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)):
                return False
        if isinstance(module, FACTORISABLE):
            owned.update(id(p) for p in module.parameters(recurse=False))
    return all(id(p) in owned and p.requires_grad for p in model.parameters())


class NotFactorisable(ValueError):
    """The model breaks an assumption of the factorised Gram (a layer ran twice, an unsupported input shape,
    a recorded layer input or output modified in place)."""


def layer_factors(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """For each supported layer, in forward order: (layer, input a (n, ...), sensitivities Δ (n, C, *output
    shape)) with Δ[i, c] = ∂f_c(x_i)/∂z(x_i), z the layer's output. One forward and C backward passes of the
    batch (Σ_i f_c(x_i) back-propagated: samples are independent, so each row of the gradient is one sample's)."""
    if not factorisable(model):
        raise NotFactorisable("a parameter outside Linear/Conv2d layers, an unsupported Conv2d, or a batch-norm, "
                              "dropout or RReLU module in training mode")
    records: dict[nn.Module, list] = {}

    def remember(module, inputs, output):
        # the version counters at the hook: an in-place op after it (ReLU(inplace=True), x += …) bumps them
        records.setdefault(module, []).append((inputs[0].detach(), output, inputs[0]._version, output._version))

    layers = [m for m in model.modules() if isinstance(m, FACTORISABLE)]
    handles = [m.register_forward_hook(remember) for m in layers]
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    if out.dim() != 2:
        raise NotFactorisable(f"the model's output has shape {tuple(out.shape)}; expected (n, C)")
    ran = [m for m in layers if m in records]
    if any(len(records[m]) != 1 for m in ran) or len(ran) != len(layers):
        raise NotFactorisable("a layer ran more or less than once in the forward pass")
    if any(a._version != va or z._version != vz for m in ran for a, z, va, vz in records[m]):
        raise NotFactorisable("a layer's input or output was modified in place after the layer ran")
    outputs = [records[m][0][1] for m in ran]
    per_output = [torch.autograd.grad(out[:, c].sum(), outputs, retain_graph=c < out.shape[1] - 1,
                                      allow_unused=True) for c in range(out.shape[1])]
    factors = []
    for k, m in enumerate(ran):
        delta = torch.stack([g[k] if g[k] is not None else torch.zeros_like(outputs[k]) for g in per_output], 1)
        factors.append((m, records[m][0][0], delta.detach()))
    return factors


def explicit_gradient(layer: nn.Module, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The layer's per-sample gradient (n, C, P_layer), weight then bias, from its inputs and sensitivities:
    Conv2d: ∂f_c/∂W[o, k] = Σ_p δ_c[o, p] patch_p[k] (patches by F.unfold); Linear on (n, ..., fan-in) inputs:
    Σ over the middle positions of δ_c ⊗ a."""
    n, C = delta.shape[:2]
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(a, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                           stride=layer.stride)                                       # (n, I·kh·kw, L)
        d = delta.reshape(n, C, layer.out_channels, -1)                               # (n, C, O, L)
        weight = torch.einsum("ncol,nkl->ncok", d, patches).reshape(n, C, -1)
        bias = d.sum(-1)
    else:
        a2 = a.reshape(n, -1, a.shape[-1])                                            # (n, L, I)
        d = delta.reshape(n, C, -1, delta.shape[-1])                                  # (n, C, L, O)
        weight = torch.einsum("nclo,nli->ncoi", d, a2).reshape(n, C, -1)
        bias = d.sum(2)
    return torch.cat([weight, bias], dim=2) if layer.bias is not None else weight


def factorised_gram(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, block_rows: int | None = None
                    ) -> torch.Tensor:
    """K[i, j, c, d] = ⟨∇_θ f_c(x1_i), ∇_θ f_d(x2_j)⟩, shape (n1, n2, C, C), as Σ over layers of
    (A1 A2ᵀ + 1) ⊙ (Δ1 Δ2ᵀ) for dense layers on (n, fan-in) inputs and explicit per-layer gradients otherwise.
    Rows of x1 are processed in blocks (``block_rows``; by default so that a temporary holds ≈ 2²⁴ numbers), so
    the peak memory is the output plus O(block · n2 · C²)."""
    f1 = layer_factors(model, x1)
    f2 = f1 if x2 is x1 else layer_factors(model, x2)
    n1, n2, C = len(x1), len(x2), f1[0][2].shape[1]
    parts1, parts2 = [], []
    for (layer, a1, d1), (_, a2, d2) in zip(f1, f2):
        if isinstance(layer, nn.Linear) and a1.dim() == 2:
            parts1.append(("dense", layer.bias is not None, a1, d1))
            parts2.append(("dense", layer.bias is not None, a2, d2))
        else:
            g1 = explicit_gradient(layer, a1, d1)
            parts1.append(("explicit", None, None, g1))
            parts2.append(("explicit", None, None, g1 if x2 is x1 else explicit_gradient(layer, a2, d2)))
    # accumulated as (n1, C, n2, C), so that each layer's product is added without a permuted copy
    gram = torch.zeros(n1, C, n2, C, dtype=f1[0][2].dtype, device=f1[0][2].device)
    block = block_rows or max(1, (1 << 24) // max(1, n2 * C * C))
    for start in range(0, n1, block):
        rows = slice(start, min(n1, start + block))
        b = rows.stop - rows.start
        for (kind, bias, a1, d1), (_, _, a2, d2) in zip(parts1, parts2):
            # sensitivity (or explicit-gradient) products Δ1 Δ2ᵀ, (b, C, n2, C)
            product = (d1[rows].reshape(b * C, -1) @ d2.reshape(n2 * C, -1).T).view(b, C, n2, C)
            if kind == "dense":
                activation = a1[rows] @ a2.T
                if bias:
                    activation += 1
                gram[rows].addcmul_(activation[:, None, :, None], product)
            else:
                gram[rows] += product
    return gram.permute(0, 2, 1, 3)
