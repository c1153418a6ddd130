"""Shared fixtures, and the order tests are handed to the two workers."""

import struct

import numpy as np
import pytest


@pytest.fixture
def tiny_data_cache(tmp_path):
    """A data cache folder holding, in their real formats, a 64-image MNIST training set (random pixels) and a
    WikiText-2 of 400 random 12–20-word sentences, so that chapters' "when present" branches run in tests."""
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, array in (("train-images-idx3-ubyte", rng.integers(0, 256, (64, 28, 28))),
                        ("train-labels-idx1-ubyte", rng.integers(0, 10, 64))):
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
        (root / "mnist" / name).write_bytes(header + array.astype(np.uint8).tobytes())
    (root / "wikitext-2").mkdir()
    words = [f"w{i}" for i in range(50)]
    for split, count in (("train", 360), ("valid", 40)):
        lines = [" = Heading = "] + [" ".join(rng.choice(words, rng.integers(12, 21))) + " ." for _ in range(count)]
        (root / "wikitext-2" / f"wiki.{split}.tokens").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def pytest_collection_modifyitems(items):
    """The chapter runs (13-60 s each) and the executed course packs first, the many short unit tests after
    them: with ``-n 2`` the short tests then fill in around the long ones instead of one worker running the last
    chapter alone."""
    long_runs = ("tests/test_chapters.py", "tests/test_course.py::test_the_pack_executes")
    items.sort(key=lambda item: 0 if item.nodeid.startswith(long_runs) else 1)
