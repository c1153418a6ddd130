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


def _expected_seconds(nodeid: str) -> float:
    """A rough cost of a test that runs a notebook: the chapter's median quick run in its committed sweep (the
    full-profile smoke runs and the course packs scaled from it); 0 for unit tests."""
    import json
    import re
    from pathlib import Path

    match = re.search(r"\[([a-z0-9-]+)\]$", nodeid)
    if match is None:
        return 0.0
    try:
        sweep = json.loads((Path(__file__).parent.parent / "results" / "seeds" / f"{match[1]}.json").read_text())
        quick = float(sweep["wall_s"]["median"])
    except (OSError, KeyError, TypeError, ValueError):
        quick = 30.0
    if "test_chapter_quick_profile" in nodeid:
        return quick
    if "test_the_pack_executes" in nodeid:
        return 2 * quick                    # the student and the instructor notebook
    if "test_chapter_full_profile_builds" in nodeid:
        return 0.4 * quick
    return 0.0


def pytest_collection_modifyitems(items):
    """The chapter runs and the executed course packs first, longest first, then the many short unit tests.

    With ``-n 2 --maxschedchunk 1`` (the Makefile) each worker takes the next test when it is free, so the two
    workers share the long runs and the short tests fill in at the end. (xdist's default hands each worker a
    block of consecutive tests: one worker then ran every chapter while the other finished the unit tests and
    waited.)"""
    long_runs = ("tests/test_chapters.py", "tests/test_course.py::test_the_pack_executes")
    items.sort(key=lambda item: (0, -_expected_seconds(item.nodeid)) if item.nodeid.startswith(long_runs)
               else (1, 0.0))
