"""Datasets of the book, all offline: the papers' synthetic generators, scikit-learn's bundled sets, and
readers for data that must be fetched beforehand (MNIST, CIFAR-10) from a cache folder.

The cache folder is ``$KITLIB_DATA`` or, by default, ``~/.cache/kitlib``; ``python -m kitlib data fetch NAME``
fills it (:mod:`kitlib.data_fetch`). A missing data set raises :class:`DataNotFoundError`, a damaged file
:class:`DataCorruptError`; both say what to run.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DataNotFoundError(FileNotFoundError):
    """A data set that has to be downloaded beforehand is not in the cache folder."""


class DataCorruptError(DataNotFoundError):
    """A data file is in the cache folder but damaged (truncated, wrong format, empty, unexpected content).
    The message names the file, what is wrong with it, and the command that fetches a good copy."""

    def __init__(self, path: Path, problem: str, dataset: str):
        super().__init__(f"{path}: {problem}. Fetch a good copy with: python -m kitlib data fetch {dataset}")
        self.path, self.problem, self.dataset = Path(path), problem, dataset


@dataclass
class Split:
    """Train/validation/test tensors; ``y_*`` may hold flipped labels, ``y_*_clean`` the true ones."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_clean: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    y_val_clean: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_test_clean: torch.Tensor
    num_classes: int = 2


def flip_labels(y: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Flip exactly ⌊n·fraction⌋ labels, chosen uniformly without replacement (as the flooding code does).

    Binary labels are swapped; with more classes a flipped label becomes a uniformly chosen *other* class."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"label-noise fraction must be in [0, 1], got {fraction}")
    y = np.array(y, copy=True)
    idx = rng.permutation(len(y))[: int(len(y) * fraction)]
    if num_classes == 2:
        y[idx] = 1 - y[idx]
    else:
        y[idx] = (y[idx] + rng.integers(1, num_classes, size=len(idx))) % num_classes
    return y


def sinusoid2d(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ishida et al.'s Sinusoid2d: x uniform in the disc of radius 2, y = [1.5 x₁ + sin(1.5 x₂) > 0].

    x = 2 (u, v)/‖(s, t, u, v)‖ with s, t, u, v ~ N(0, 1) (two coordinates of a point on S³)."""
    s, t, u, v = rng.standard_normal((4, n))
    norm = np.sqrt(s**2 + t**2 + u**2 + v**2)
    x = 2 * np.stack([u / norm, v / norm], axis=1)
    y = (1.5 * x[:, 0] + np.sin(1.5 * x[:, 1]) > 0).astype(np.int64)
    return x.astype(np.float32), y


def two_gaussians(n: int, rng: np.random.Generator, dim: int = 10, mean: float = 1.0):
    """Two Gaussians: class 1 ~ N(0, I_d), class 0 ~ N(mean·1, I_d), n/2 points each."""
    n_pos = n // 2
    x = rng.standard_normal((n, dim))
    x[n_pos:] += mean
    y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n - n_pos, dtype=np.int64)]
    return x.astype(np.float32), y


def spiral(n: int, rng: np.random.Generator, noise_level: float = 1.0):
    """Two-armed spiral: a(cos a, sin a) and (a + π)(cos a, sin a), a ∈ [0, 4π], plus N(0, noise²) noise."""
    n_pos = n // 2
    a = np.r_[np.linspace(0, 4 * np.pi, n_pos), np.linspace(0, 4 * np.pi, n - n_pos)]
    radius = np.r_[a[:n_pos], a[n_pos:] + np.pi]
    x = np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1) + noise_level * rng.standard_normal((n, 2))
    y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n - n_pos, dtype=np.int64)]
    return x.astype(np.float32), y


SYNTHETIC = {"sinusoid2d": sinusoid2d, "two_gaussians": two_gaussians, "spiral": spiral}


def synthetic_split(name: str, rng: np.random.Generator, n_train: int = 100, n_val: int = 100,
                    n_test: int = 20000, label_noise: float = 0.1) -> Split:
    """One of the flooding paper's synthetic sets, label noise applied to train, validation *and* test
    (as in the official code; the clean labels are kept beside them)."""
    if name not in SYNTHETIC:
        raise ValueError(f"unknown synthetic data set {name!r}; choose one of {', '.join(SYNTHETIC)}")
    parts = []
    for n in (n_train, n_val, n_test):
        x, y = SYNTHETIC[name](n, rng)
        parts += [torch.from_numpy(x), torch.from_numpy(flip_labels(y, label_noise, 2, rng)), torch.from_numpy(y)]
    return Split(*parts, num_classes=2)


def digits_split(rng: np.random.Generator, label_noise: float = 0.0, n_val: int = 300, n_test: int = 497,
                 standardise: bool = True) -> Split:
    """scikit-learn's bundled handwritten digits (1797 images of 8×8, 10 classes), standardised with the
    training mean/std (or, with ``standardise=False``, pixels scaled to [0, 1]); label noise (uniform over the
    other classes) on train and validation only."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = rng.permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    n_train = len(y) - n_val - n_test
    if n_train <= 0:
        raise ValueError("n_val + n_test leave no training data (digits has 1797 images)")
    if standardise:
        x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-3)
    else:
        x = x / 16.0
    tr, va, te = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None)
    return Split(torch.from_numpy(x[tr]), torch.from_numpy(flip_labels(y[tr], label_noise, 10, rng)),
                 torch.from_numpy(y[tr]), torch.from_numpy(x[va]),
                 torch.from_numpy(flip_labels(y[va], label_noise, 10, rng)), torch.from_numpy(y[va]),
                 torch.from_numpy(x[te]), torch.from_numpy(y[te]), torch.from_numpy(y[te]), num_classes=10)


# --- data that must be fetched beforehand ----------------------------------------------------------------
def data_dir() -> Path:
    """The cache folder for downloaded data: ``$KITLIB_DATA`` or ``~/.cache/kitlib``."""
    return Path(os.environ.get("KITLIB_DATA", Path.home() / ".cache" / "kitlib")).expanduser()


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format): magic 0x0000 | dtype 0x08 | ndim, big-endian int32 sizes, bytes.
    A damaged file (unreadable gzip, wrong magic, fewer bytes than the header promises) raises
    :class:`DataCorruptError`."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataCorruptError(path, f"cannot be read ({err})", "mnist") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataCorruptError(path, f"is not an unsigned-byte IDX file (magic bytes {data[:4].hex() or 'none'}, "
                                     "expected 000008..)", "mnist")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataCorruptError(path, "is truncated inside its IDX header", "mnist")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataCorruptError(path, f"has {len(data)} bytes where its IDX header {shape} promises {expected} "
                                     "(truncated or padded)", "mnist")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(split: str = "train", root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from ``<root>/mnist/`` (IDX files, gzipped or not): images (n, 1, 28, 28) in [0, 1], labels."""
    folder = Path(root or data_dir()) / "mnist"
    found = []
    for name in MNIST_FILES[split]:
        candidates = [folder / name, folder / f"{name}.gz"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise DataNotFoundError(
                f"MNIST not found: {candidates[1]} (or the uncompressed file) is missing. On a machine with "
                f"internet run: python -m kitlib data fetch mnist (it verifies the official checksums and "
                f"writes {folder}), or set KITLIB_DATA to a folder that has mnist/ in it.")
        found.append(path)
    images, labels = (_read_idx(p) for p in found)
    return torch.from_numpy(images.astype(np.float32) / 255).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_cifar10(split: str = "train", root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` (the python pickles): images (n, 3, 32, 32) in [0, 1]."""
    folder = Path(root or data_dir()) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DataNotFoundError(
            f"CIFAR-10 not found: {folder / missing[0]} is missing. On a machine with internet run: "
            f"python -m kitlib data fetch cifar10 (it downloads cifar-10-python.tar.gz, verifies it and unpacks "
            f"it into {folder}), or set KITLIB_DATA to a folder that has cifar-10-batches-py/.")
    images, labels = [], []
    for name in names:
        batch = _read_cifar_batch(folder / name)
        images.append(batch[b"data"].reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return (torch.from_numpy(np.concatenate(images).astype(np.float32) / 255),
            torch.from_numpy(np.concatenate(labels)))


class _CifarUnpickler(pickle.Unpickler):
    """Loads only what the official CIFAR-10 batches contain: plain containers, bytes, numbers, and numpy
    arrays (reconstructed through ``_reconstruct``, ``ndarray`` and ``dtype``). Any other global (a function
    that runs code, say) is refused, so a data cache cannot be a way to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 batch: a dict with b"data" (n, 3072) uint8 and b"labels" (n,), read with the restricted
    unpickler; anything else raises :class:`DataCorruptError`."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise DataCorruptError(path, f"is not a CIFAR-10 batch ({err})", "cifar10") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DataCorruptError(path, f"is not a readable CIFAR-10 pickle ({type(err).__name__}: {err})",
                               "cifar10") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataCorruptError(path, "holds no uint8 array b'data' of shape (n, 3072)", "cifar10")
    if labels is None or len(labels) != len(data):
        raise DataCorruptError(path, f"holds {0 if labels is None else len(labels)} labels for {len(data)} images",
                               "cifar10")
    return batch


WIKITEXT2_SENTENCE_END = {".", "?", "!"}


def load_wikitext2_sentences(split: str = "train", root: Path | None = None) -> list[list[str]]:
    """WikiText-2 (the tokenised release, ``<root>/wikitext-2/wiki.{train,valid,test}.tokens``) split into
    sentences: heading lines (`` = Title = ``) and blank lines are dropped, each paragraph's tokens are cut
    after ``.``, ``?`` and ``!``. Tokens are kept as the release has them (cased, ``<unk>`` included)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"unknown split {split!r}; choose train, valid or test")
    path = Path(root or data_dir()) / "wikitext-2" / f"wiki.{split}.tokens"
    if not path.exists():
        raise DataNotFoundError(
            f"WikiText-2 not found: {path} is missing. On a machine with internet run: python -m kitlib data "
            f"fetch wikitext2 (it downloads wikitext-2-v1.zip, verifies it and unpacks it into "
            f"{path.parent}), or set KITLIB_DATA to a folder that has wikitext-2/.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataCorruptError(path, f"is not UTF-8 text ({err.reason} at byte {err.start})", "wikitext2") from None
    if not text.strip():
        raise DataCorruptError(path, "is empty", "wikitext2")
    sentences = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or (tokens[0] == "=" and tokens[-1] == "="):
            continue
        current = []
        for token in tokens:
            current.append(token)
            if token in WIKITEXT2_SENTENCE_END:
                sentences.append(current)
                current = []
        if current:
            sentences.append(current)
    return sentences
