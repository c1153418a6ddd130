"""kitlib.data: the paper's generators, label noise, digits, and the on-disk readers of MNIST and CIFAR-10
on tiny files written here in the real formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from kitlib.data import (DataNotFoundError, digits_split, flip_labels, load_cifar10, load_mnist, sinusoid2d,
                         spiral, synthetic_split, two_gaussians)


def test_flip_labels_flips_exactly_the_fraction():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    flipped = flip_labels(y, 0.1, 2, rng)
    assert (flipped != y).sum() == 100
    y10 = rng.integers(0, 10, 1000)
    noisy = flip_labels(y10, 0.3, 10, rng)
    assert (noisy != y10).sum() == 300          # a flipped label is always another class
    with pytest.raises(ValueError):
        flip_labels(y, 1.5, 2, rng)


def test_sinusoid2d_lies_in_the_disc_and_follows_the_rule():
    x, y = sinusoid2d(5000, np.random.default_rng(1))
    assert np.all(np.linalg.norm(x, axis=1) <= 2 + 1e-6)
    np.testing.assert_array_equal(y, (1.5 * x[:, 0] + np.sin(1.5 * x[:, 1]) > 0).astype(int))
    # uniform in the disc: the fraction inside radius 1 is 1/4
    assert abs(np.mean(np.linalg.norm(x, axis=1) < 1) - 0.25) < 0.03


def test_two_gaussians_and_spiral_shapes():
    x, y = two_gaussians(4000, np.random.default_rng(2), dim=10, mean=1.0)
    assert x.shape == (4000, 10) and y.mean() == 0.5
    assert abs(x[y == 0].mean() - 1.0) < 0.05 and abs(x[y == 1].mean()) < 0.05
    x, y = spiral(200, np.random.default_rng(3), noise_level=0.0)
    radius = np.linalg.norm(x, axis=1)
    assert radius[y == 1].max() == pytest.approx(4 * np.pi) and radius[y == 0].max() == pytest.approx(5 * np.pi)


def test_synthetic_split_keeps_clean_labels_and_noises_every_part():
    split = synthetic_split("sinusoid2d", np.random.default_rng(0), n_train=100, n_val=100, n_test=1000)
    assert (split.y_train != split.y_train_clean).sum() == 10
    assert (split.y_test != split.y_test_clean).sum() == 100
    with pytest.raises(ValueError, match="sinusoid2d"):
        synthetic_split("moons", np.random.default_rng(0))


def test_digits_split_standardises_and_keeps_test_clean():
    split = digits_split(np.random.default_rng(0), label_noise=0.3)
    assert split.x_train.shape[1] == 64 and split.num_classes == 10
    assert torch.allclose(split.x_train.mean(0), torch.zeros(64), atol=1e-4)
    assert torch.equal(split.y_test, split.y_test_clean)
    assert (split.y_train != split.y_train_clean).float().mean().item() == pytest.approx(0.3, abs=0.001)
    raw = digits_split(np.random.default_rng(0), standardise=False)
    assert raw.x_train.min().item() == 0.0 and raw.x_train.max().item() == 1.0


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reader_on_tiny_idx_files(tmp_path, monkeypatch, compress):
    monkeypatch.setenv("KITLIB_DATA", str(tmp_path))
    folder = tmp_path / "mnist"
    folder.mkdir()
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.array([7, 2, 1]), compress)
    x, y = load_mnist("test")
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [7, 2, 1]
    assert x[0, 0, 0, 1].item() == pytest.approx(1 / 255)


def test_mnist_missing_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("KITLIB_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="MNIST not found.*KITLIB_DATA"):
        load_mnist("train")


def test_cifar10_reader_on_tiny_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": [3, 1, 4, 1]}, f)
    x, y = load_cifar10("test", root=tmp_path)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [3, 1, 4, 1]
    assert x[1, 2, 0, 0].item() == pytest.approx(data[1, 2048] / 255)
    with pytest.raises(DataNotFoundError, match="data_batch_1.*cifar-10-python.tar.gz"):
        load_cifar10("train", root=tmp_path)


def test_wikitext2_reader_on_a_tiny_file(tmp_path, monkeypatch):
    from kitlib.data import load_wikitext2_sentences

    monkeypatch.setenv("KITLIB_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="wikitext-2"):
        load_wikitext2_sentences("train")
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    (folder / "wiki.train.tokens").write_text(
        " \n = Valkyria Chronicles = \n \n The game was released in 2011 . It sold well ! Why ? \n"
        " = = Plot = = \n A tail without an end \n", encoding="utf-8")
    assert load_wikitext2_sentences("train") == [
        ["The", "game", "was", "released", "in", "2011", "."], ["It", "sold", "well", "!"], ["Why", "?"],
        ["A", "tail", "without", "an", "end"]]
    with pytest.raises(ValueError, match="unknown split"):
        load_wikitext2_sentences("dev")
