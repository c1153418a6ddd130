"""The runner and `python -m kitlib`: bad input is refused with exit status 2 before any work, a failed
chapter leaves the previous good outputs untouched, a good one writes a valid record."""

import json
import re
import subprocess
import sys

import nbformat
import pytest
import torch

from kitlib.chapters import SLUGS
from kitlib.record import validate_record
from kitlib.runner import ChapterNotWrittenError, run_chapter


def kitlib_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "kitlib", *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


@pytest.mark.parametrize("args, message", [
    (["run", "no-such-chapter"], "valid slugs: flooding, seq2seq-stop"),
    (["run", "flooding", "--profile", "fast"], "choose from 'quick', 'full'"),
    (["run", "flooding", "--seed", "-1"], "non-negative integer"),
    (["run", "flooding", "--seed", "1.5"], "non-negative integer"),
    (["run", "flooding", "--device", "tpu"], "choose from 'auto', 'cpu', 'cuda'"),
])
def test_bad_input_exits_2_with_a_message(args, message):
    result = kitlib_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_unwritten_chapter_is_refused_and_listed(tmp_path, monkeypatch, capsys):
    with pytest.raises(ChapterNotWrittenError):
        run_chapter("wgan", root=tmp_path, out_dir=tmp_path / "out")
    import kitlib.__main__ as cli

    # every chapter is written by now: pretend wgan is not, in-process, to reach the CLI's refusal
    real_source = cli.chapter_source
    monkeypatch.setattr(cli, "chapter_source",
                        lambda slug, root=None: tmp_path / "missing.md" if slug == "wgan" else real_source(slug, root))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "wgan"])
    assert exit_info.value.code == 2 and "not written yet" in capsys.readouterr().err
    assert cli.main(["list", "--out", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["wgan"].endswith("not written yet") and lines["flooding"].endswith("not run yet")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_suggests_cpu():
    result = kitlib_cli("run", "flooding", "--device", "cuda")
    assert result.returncode == 2 and "--device cpu" in result.stderr


def test_help_and_list():
    for verb in ("run", "list"):
        assert kitlib_cli(verb, "--help").returncode == 0
    listing = kitlib_cli("list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(SLUGS)
    assert all(line.endswith(("not written yet", "not run yet")) or "claims hold" in line for line in lines)


CHAPTER = """\
---
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A tiny chapter

```{{code-cell}} ipython3
:tags: [parameters]

slug = "flooding"
profile = "quick"
seed = 0
device = "auto"
smoke = False
record_path = ""
```

```{{code-cell}} ipython3
import kitlib.run
from kitlib.claims import Claim, at_most
run = kitlib.run.start(slug, profile=profile, seed=seed, device=device, smoke=smoke, record_path=record_path,
                       profiles={{"quick": {{"n": 1}}, "full": {{"n": 2}}}})
claims = run.claims([Claim("T1", "a claim", "test", kind="identity", bounds=at_most(1.0))])
claims.measure("T1", {value})
```

```{{code-cell}} ipython3
run.finish()
```
"""


def _project(tmp_path, value):
    (tmp_path / "chapters").mkdir(exist_ok=True)
    (tmp_path / "chapters" / "flooding.md").write_text(CHAPTER.format(value=value))
    return tmp_path


def test_runner_writes_notebook_and_valid_record(tmp_path):
    root = _project(tmp_path, 0.5)
    outcome = run_chapter("flooding", seed=4, root=root, out_dir=root / "out")
    assert outcome.ok, outcome.message
    record = validate_record(json.loads((root / "out" / "flooding.json").read_text()))
    assert record["seed"] == 4 and record["profile"] == "quick" and record["claims"][0]["holds"]
    assert record["parameters"]["device"] == "auto" and record["device"] in ("cpu", "cuda")
    nb = nbformat.read(root / "out" / "flooding.ipynb", as_version=4)
    parameters = nb.metadata.papermill.parameters
    assert {k: parameters[k] for k in ("slug", "profile", "seed", "device", "smoke")} == \
        {"slug": "flooding", "profile": "quick", "seed": 4, "device": "auto", "smoke": False}
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata.tags
    assert re.search(r"^record_path = \"\"", injected[0].source, flags=re.M)
    assert "Executed with profile **quick**, seed 4, on CPU" in nb.cells[1].source
    assert all("remove-cell" in c.metadata.tags for c in nb.cells if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", [])))
    assert not [p.name for p in (root / "out").iterdir() if p.name.startswith(".")]


def test_failed_claim_keeps_previous_outputs(tmp_path):
    root = _project(tmp_path, 0.5)
    assert run_chapter("flooding", root=root, out_dir=root / "out").ok
    before = {p.name: p.read_bytes() for p in (root / "out").iterdir()}
    _project(tmp_path, 5.0)                       # now T1 fails
    outcome = run_chapter("flooding", root=root, out_dir=root / "out")
    assert not outcome.ok
    assert "ClaimsFailed" in outcome.message and "T1" in outcome.message
    assert "partial notebook kept at" in outcome.message
    assert {p.name: p.read_bytes() for p in (root / "out").iterdir()} == before
    assert outcome.record is not None and outcome.record["claims"][0]["holds"] is False  # seed sweeps count it


def test_smoke_flag_reaches_the_kernel(tmp_path):
    root = _project(tmp_path, 5.0)                # failing claim, but smoke mode does not enforce
    chapter = (root / "chapters" / "flooding.md").read_text().replace('{"n": 2}', "Cfg()")
    chapter = chapter.replace("import kitlib.run", "import kitlib.run\nclass Cfg(dict):\n"
                              "    def smoke(self):\n        return {'n': 0}")
    (root / "chapters" / "flooding.md").write_text(chapter)
    outcome = run_chapter("flooding", profile="full", smoke=True, root=root, out_dir=root / "out")
    assert outcome.ok, outcome.message
    assert outcome.record["smoke"] is True and outcome.record["config"] == {"n": 0}
    assert "not enforced" in outcome.message


# --- seed sweeps --------------------------------------------------------------------------------------
def test_parse_seeds():
    from kitlib.seeds import parse_seeds

    assert parse_seeds("0-9") == list(range(10)) and parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("3-1", "-1", "a", "1,1", ""):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    result = kitlib_cli("seeds", "flooding", "--seeds", "x")
    assert result.returncode == 2 and "0-9" in result.stderr
    result = kitlib_cli("seeds", "flooding", "--jobs", "0")
    assert result.returncode == 2 and "--jobs" in result.stderr


def test_summarise_counts_held_seeds_and_spreads():
    from kitlib.seeds import hard_claims_not_always_held, spread, summarise

    def record(value, null):
        return {"claims": [{"id": "G", "hard": True, "kind": "measurement", "target": "≥ 2", "value": value,
                            "holds": value >= 2 and null < 2, "null": {"label": "plain", "value": null,
                                                                        "holds": null >= 2}}]}

    records = {0: record(3.0, 0.1), 1: record(1.0, 0.2), 2: record(4.0, 2.5), 3: None}   # seed 3 crashed
    summary = summarise("flooding", "quick", [0, 1, 2, 3], records,
                        [{"seed": s, "ok": True, "wall_s": 10.0 + s} for s in range(4)])
    g = summary["claims"]["G"]
    assert (g["held"], g["of"], g["failed_seeds"]) == (1, 4, [1, 2, 3])
    assert g["value"] == {"min": 1.0, "median": 3.0, "max": 4.0}
    assert g["null"] == {"label": "plain", "value": {"min": 0.1, "median": 0.2, "max": 2.5}, "held": 1}
    assert hard_claims_not_always_held(summary) == ["G (1/4)"]
    with_detail = {s: record(3.0, 0.1) for s in range(3)}
    for s, r in with_detail.items():
        r["claims"][0]["detail"] = {"gap": float(s), "per seed": [1, 2], "label": "x"}
    detail = summarise("flooding", "quick", [0, 1, 2], with_detail, [])["claims"]["G"]["detail"]
    assert detail == {"gap": {"min": 0.0, "median": 1.0, "max": 2.0}}      # lists and text left out
    assert "detail" not in g
    assert spread([{"a": 1, "b": 2}, {"a": 3, "b": "x"}]) == {"a": {"min": 1, "median": 2.0, "max": 3},
                                                             "b": {"min": 2.0, "median": 2.0, "max": 2.0}}


def test_sweep_runs_each_seed_and_writes_the_summary(tmp_path):
    from kitlib.seeds import run_sweep

    root = _project(tmp_path, "0.1 * seed")          # the claim (≤ 1) fails for seeds above 10
    summary = run_sweep("flooding", [0, 11], jobs=2, root=root, report=lambda line: None)
    written = json.loads((root / "results" / "seeds" / "flooding.json").read_text())
    assert written == summary and written["seeds"] == [0, 11]
    assert written["claims"]["T1"]["held"] == 1 and written["claims"]["T1"]["failed_seeds"] == [11]
    assert [r["ok"] for r in written["runs"]] == [True, False]
    assert written["claims"]["T1"]["value"] == {"min": 0.0, "median": 0.55, "max": 1.1}


def test_a_kernel_that_never_starts_is_started_again_and_other_errors_are_not_retried():
    """jupyter_client's free-port race ("Address already in use") shows as "Kernel didn't respond": retried."""
    from kitlib.runner import with_kernel_start_retry

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("Kernel didn't respond in 60 seconds")
        return "ran"

    assert with_kernel_start_retry(flaky) == "ran" and len(calls) == 3
    def never():
        calls.append(1)
        raise RuntimeError("Kernel didn't respond in 60 seconds")

    calls.clear()
    with pytest.raises(RuntimeError, match="respond"):
        with_kernel_start_retry(never, attempts=2)
    assert len(calls) == 2

    def broken():
        calls.append(1)
        raise RuntimeError("a cell raised")

    calls.clear()
    with pytest.raises(RuntimeError, match="a cell raised"):
        with_kernel_start_retry(broken)
    assert len(calls) == 1
