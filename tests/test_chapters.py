"""Every written chapter, executed through the runner as a user would: quick profile into book/ (which
nbval and the book render then use), and its full configuration for its first steps (--smoke)."""

import json
import os
import subprocess
import sys

import nbformat
import pytest

from kitlib.chapters import project_root, written_chapters
from kitlib.record import hard_failures, validate_record
from kitlib.seeds import load_sweep

ROOT = project_root()
SLUGS = [c.slug for c in written_chapters()]


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kitlib", "run", *args], capture_output=True, text=True,
                          timeout=1200, env=env)


@pytest.mark.parametrize("slug", SLUGS)
def test_chapter_quick_profile(slug):
    result = _run(slug)
    assert result.returncode == 0, result.stdout + result.stderr
    record = validate_record(json.loads((ROOT / "book" / f"{slug}.json").read_text()))
    assert record["profile"] == "quick" and not record["smoke"]
    assert hard_failures(record) == []
    assert record["claims"], "a chapter must check claims"
    nb = nbformat.read(ROOT / "book" / f"{slug}.ipynb", as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", cell.source[:200]
            assert not (output.output_type == "stream" and output.name == "stderr"), output.text[:500]
    assert any("nbval-check-output" in c.metadata.get("tags", []) for c in nb.cells), \
        "the claims table cell must be compared by nbval"
    sweep = load_sweep(slug)
    assert sweep is not None, f"no committed seed sweep: python -m kitlib seeds {slug} --seeds 0-9"
    assert sweep["profile"] == "quick"
    assert list(sweep["claims"]) == [c["id"] for c in record["claims"]], \
        f"results/seeds/{slug}.json is stale (its claim ids differ from the chapter's): rerun the sweep"


@pytest.mark.parametrize("slug", SLUGS)
def test_committed_sweep_holds_every_hard_claim_on_ten_seeds(slug):
    sweep = load_sweep(slug)
    assert sweep is not None, f"no committed seed sweep: python -m kitlib seeds {slug} --seeds 0-9"
    assert len(sweep["seeds"]) >= 10
    weak = {cid: f"{c['held']}/{c['of']}" for cid, c in sweep["claims"].items() if c["hard"] and c["held"] < c["of"]}
    assert not weak, f"hard claims that did not hold on every seed: {weak}"


@pytest.mark.parametrize("slug", SLUGS)
def test_chapter_full_profile_builds(slug, tmp_path, tiny_data_cache):
    # tiny MNIST and WikiText-2 in the data cache, so that branches that use them when present run here too
    env = {**os.environ, "KITLIB_DATA": str(tiny_data_cache)}
    result = _run(slug, "--profile", "full", "--smoke", "--out", str(tmp_path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    record = validate_record(json.loads((tmp_path / f"{slug}.json").read_text()))
    assert record["profile"] == "full" and record["smoke"]
    if slug == "wgan":
        nb = nbformat.read(tmp_path / "wgan.ipynb", as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "MNIST ctransform" in text and "MNIST skipped" not in text
    if slug == "seq2seq-stop":
        nb = nbformat.read(tmp_path / "seq2seq-stop.ipynb", as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "sentences in WikiText-2" in text
