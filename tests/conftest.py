"""Shared fixtures."""

import struct

import numpy as np
import pytest


@pytest.fixture
def tiny_mnist_cache(tmp_path):
    """A data cache folder holding a 64-image MNIST training set in the real IDX format (random pixels)."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, array in (("train-images-idx3-ubyte", rng.integers(0, 256, (64, 28, 28))),
                        ("train-labels-idx1-ubyte", rng.integers(0, 10, 64))):
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
        (folder / name).write_bytes(header + array.astype(np.uint8).tobytes())
    return folder.parent
