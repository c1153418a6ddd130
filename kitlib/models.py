"""Models of the book, each in plain PyTorch.

- :class:`IshidaMLP`: the flooding paper's synthetic-data model (official code ``utils/models.py``):
  4 × [Linear → BatchNorm1d → ReLU] of width 500, then Linear.
- :class:`BatchedMLP`: R independent copies of that MLP trained at once with batched matmuls; member r sees
  only its own inputs and parameters, so it equals R separate models (tested). Many seeds and flood levels
  then cost one training loop — on a GPU that is the difference between launch-bound and busy.
- :func:`resnet18_cifar`: ResNet-18 for 32×32 images (3×3 stem, no max-pool), as in common CIFAR code.
- :func:`digits_cnn`: a small smooth (tanh) CNN for scikit-learn's 8×8 digits, flattened input of 64.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class IshidaMLP(nn.Sequential):
    """[Linear(d_in→w) → BN → ReLU] → ([Linear(w→w) → BN → ReLU]) × (depth−1) → Linear(w→d_out)."""

    def __init__(self, input_dim: int, output_dim: int, width: int = 500, depth: int = 4,
                 batch_norm: bool = True):
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(input_dim if i == 0 else width, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width, output_dim))
        super().__init__(*layers)


class BatchedMLP(nn.Module):
    """R independent :class:`IshidaMLP` s. Input (R, n, d_in) → output (R, n, d_out).

    Hidden layer: h ← ReLU(BN(h W_r + b_r)) with BN over the n samples of member r (training mode:
    batch mean and biased variance; running estimates updated with momentum 0.1 and the unbiased
    variance, as ``nn.BatchNorm1d``). Initialisation as ``nn.Linear``: U(−1/√fan_in, 1/√fan_in)."""

    def __init__(self, members: int, input_dim: int, output_dim: int, width: int = 500, depth: int = 4,
                 batch_norm: bool = True, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        dims = [input_dim] + [width] * depth + [output_dim]
        self.members, self.depth, self.batch_norm = members, depth, batch_norm
        self.momentum, self.eps = momentum, eps
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            bound = 1 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound)))
        if batch_norm:
            self.bn_weights = nn.ParameterList(nn.Parameter(torch.ones(members, 1, width)) for _ in range(depth))
            self.bn_biases = nn.ParameterList(nn.Parameter(torch.zeros(members, 1, width)) for _ in range(depth))
            for i in range(depth):
                self.register_buffer(f"running_mean{i}", torch.zeros(members, 1, width))
                self.register_buffer(f"running_var{i}", torch.ones(members, 1, width))

    def _batch_norm(self, h: torch.Tensor, i: int) -> torch.Tensor:
        running_mean, running_var = getattr(self, f"running_mean{i}"), getattr(self, f"running_var{i}")
        if self.training:
            mean = h.mean(dim=1, keepdim=True)
            var = h.var(dim=1, unbiased=False, keepdim=True)
            n = h.shape[1]
            with torch.no_grad():
                running_mean.lerp_(mean, self.momentum)
                running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = running_mean, running_var
        return (h - mean) * torch.rsqrt(var + self.eps) * self.bn_weights[i] + self.bn_biases[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] != self.members:
            raise ValueError(f"expected input of shape (members={self.members}, n, d), got {tuple(x.shape)}")
        h = x
        for i in range(self.depth):
            h = torch.baddbmm(self.biases[i], h, self.weights[i])
            if self.batch_norm:
                h = self._batch_norm(h, i)
            h = F.relu(h)
        return torch.baddbmm(self.biases[-1], h, self.weights[-1])

    @torch.no_grad()
    def forward_member(self, r: int, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode output (n, d_out) of member r alone at inputs x (n, d_in): costs one member, not R."""
        h = x
        for i in range(self.depth + 1):
            h = torch.addmm(self.biases[i][r], h, self.weights[i][r])
            if i == self.depth:
                return h
            if self.batch_norm:
                mean, var = getattr(self, f"running_mean{i}")[r], getattr(self, f"running_var{i}")[r]
                h = (h - mean) * torch.rsqrt(var + self.eps) * self.bn_weights[i][r] + self.bn_biases[i][r]
            h = F.relu(h)

    @torch.no_grad()
    def load_member(self, r: int, mlp: IshidaMLP) -> None:
        """Copy the parameters and BN statistics of one :class:`IshidaMLP` into member r."""
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        norms = [m for m in mlp if isinstance(m, nn.BatchNorm1d)]
        for i, lin in enumerate(linears):
            self.weights[i][r].copy_(lin.weight.T)
            self.biases[i][r, 0].copy_(lin.bias)
        for i, bn in enumerate(norms):
            self.bn_weights[i][r, 0].copy_(bn.weight)
            self.bn_biases[i][r, 0].copy_(bn.bias)
            getattr(self, f"running_mean{i}")[r, 0].copy_(bn.running_mean)
            getattr(self, f"running_var{i}")[r, 0].copy_(bn.running_var)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18_cifar(num_classes: int = 10, width: int = 64) -> nn.Module:
    """ResNet-18 for 32×32 inputs: 3×3 stem, stages of 2 basic blocks at width·(1, 2, 4, 8), global pool."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    c_in = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(_BasicBlock(c_in, width * mult, stride))
            c_in = width * mult
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def digits_cnn(channels: int = 8, num_classes: int = 10) -> nn.Module:
    """(n, 64) → view (n, 1, 8, 8) → conv 3×3 → tanh → conv 3×3 (stride 2) → tanh → linear. Smooth
    activations keep gradient flow well approximated by small steps (chapter ``sgd-svm``)."""
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, channels, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(channels * 16, num_classes))
