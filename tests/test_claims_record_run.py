"""The claims ledger, the run record schema and the run context (seed, device, profile, finish)."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import kitlib.__main__ as cli
import kitlib.run as kr
from kitlib.claims import ClaimsFailed, ClaimsLedger
from kitlib.record import (InvalidRecordError, claims_held, find_records, hard_failures, validate_record,
                           write_json_atomic)


ROOT_TESTS = Path(__file__).parent


# --- claims -------------------------------------------------------------------------------------------
def test_check_range_bounds_and_nan():
    ledger = ClaimsLedger("demo")
    ledger.check_range("A", "s", "src", 0.5, low=0, high=1)
    ledger.check_range("B", "s", "src", 1.5, high=1)
    ledger.check_range("C", "s", "src", float("nan"), low=0)
    assert [c.holds for c in ledger.claims] == [True, False, False]
    assert ledger.claims[0].target == "in [0, 1]" and ledger.claims[1].target == "≤ 1"
    with pytest.raises(ValueError):
        ledger.check_range("D", "s", "src", 1.0)


def test_check_close_relative_and_absolute():
    ledger = ClaimsLedger("demo")
    ledger.check_close("A", "s", "src", 1.02, 1.0, rel_tol=0.03)
    ledger.check_close("B", "s", "src", 1.05, 1.0, rel_tol=0.03)
    ledger.check_close("C", "s", "src", 0.0, 1e-9, abs_tol=1e-8)
    assert [c.holds for c in ledger.claims] == [True, False, True]
    assert ledger.claims[0].target == "1 ± 3 %"


def test_rechecking_an_id_replaces_its_row():
    ledger = ClaimsLedger("demo")
    ledger.check_range("A", "s", "src", 5.0, high=1)
    ledger.check_range("A", "s", "src", 0.5, high=1)
    assert [c.id for c in ledger.claims] == ["A"] and ledger.claims[0].holds


def test_raise_if_failed_names_hard_failures_only():
    ledger = ClaimsLedger("demo")
    ledger.check_range("HARD", "s", "src", 2.0, high=1)
    ledger.check_range("SOFT", "s", "src", 2.0, high=1, hard=False)
    ledger.check_range("OK", "s", "src", 0.0, high=1)
    with pytest.raises(ClaimsFailed, match="HARD") as err:
        ledger.raise_if_failed()
    assert "SOFT" not in str(err.value)
    html = ledger._repr_html_()
    assert "✗" in html and "✓" in html and "1/3 claims hold" in html
    assert repr(ledger.claims[0]).startswith("✗ HARD FAILS")


def test_claim_values_become_json():
    ledger = ClaimsLedger("demo")
    ledger.check("A", "s", "src", {"x": np.float64(1.5), "t": torch.tensor([1.0, 2.0])}, holds=True, target="t")
    assert json.loads(json.dumps(ledger.claims[0].as_record()))["value"] == {"x": 1.5, "t": [1.0, 2.0]}


def test_each_verdict_is_printed_under_its_cell(capsys):
    ledger = ClaimsLedger("demo")
    ledger.check_range("A", "s", "src", 2.0, high=1, hard=False)
    assert capsys.readouterr().out.strip() == "✗ A does not hold (soft): measured 2, target ≤ 1"
    ClaimsLedger("quiet", echo=False).check_range("B", "s", "src", 0.0, high=1)
    assert capsys.readouterr().out == ""


# --- record -------------------------------------------------------------------------------------------
def _record(**overrides):
    ledger = ClaimsLedger("flooding")
    ledger.check_range("F1", "s", "src", 0.5, high=1)
    ledger.check_range("F2", "s", "src", 5.0, high=1, hard=False)
    run = kr.Run("flooding", "quick", 0, torch.device("cpu"), {"width": 8}, np.random.default_rng(0))
    record = run.record(ledger)
    record.pop("kernel_s")
    record.update(started="2026-11-22T00:00:00+00:00", wall_s=1.0, git_commit="abc")
    record.update(overrides)
    return record


def test_a_complete_record_validates_and_summarises():
    record = validate_record(_record())
    assert claims_held(record) == (1, 2)
    assert hard_failures(record) == []
    assert {"python", "torch", "kitlib"} <= set(record["versions"])


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("wall_s"), "missing field 'wall_s'"),
    (lambda r: r.update(seed="0"), "field 'seed'"),
    (lambda r: r.update(profile="medium"), "profile 'medium'"),
    (lambda r: r["claims"][0].pop("holds"), "claim 0 (F1)"),
])
def test_invalid_records_are_named(change, message):
    record = _record()
    change(record)
    with pytest.raises(InvalidRecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_record(record)


def test_atomic_write_and_find_records_skip_foreign_json(tmp_path):
    write_json_atomic(tmp_path / "flooding.json", _record())
    (tmp_path / "other.json").write_text('{"not": "a record"}')
    (tmp_path / "broken.json").write_text("{")
    assert [r["chapter"] for r in find_records(tmp_path)] == ["flooding"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.json", "flooding.json", "other.json"]


# --- run context --------------------------------------------------------------------------------------
def test_seed_everything_reproduces_every_generator():
    draws = []
    for _ in range(2):
        rng = kr.seed_everything(11)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item(), rng.random()))
    assert draws[0] == draws[1]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            kr.seed_everything(bad)


def test_pick_device():
    assert kr.pick_device("cpu").type == "cpu"
    assert kr.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        kr.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(kr.DeviceUnavailableError, match="--device cpu"):
            kr.pick_device("cuda")


def test_select_profile():
    profiles = {"quick": 1, "full": 2}
    assert kr.select_profile(profiles, "full") == 2
    with pytest.raises(kr.UnknownProfileError, match="quick, full"):
        kr.select_profile(profiles, "fast")
    with pytest.raises(ValueError, match="full"):
        kr.select_profile({"quick": 1}, "quick")
    assert cli.PROFILES == kr.PROFILES and cli.DEVICES == kr.DEVICES


def test_finish_writes_the_record_then_raises(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    monkeypatch.setenv("KITLIB_RECORD", str(path))
    monkeypatch.setenv("KITLIB_SMOKE", "0")
    run = kr.start("flooding", profile="quick", seed=3, device="cpu", profiles={"quick": {"a": 1}, "full": {}})
    ledger = ClaimsLedger("flooding")
    ledger.check_range("X", "s", "src", 2.0, high=1)
    with pytest.raises(ClaimsFailed, match="X"):
        run.finish(ledger)
    saved = json.loads(path.read_text())
    assert saved["seed"] == 3 and saved["claims"][0]["holds"] is False and saved["config"] == {"a": 1}


def test_smoke_mode_shrinks_the_config_and_does_not_enforce(monkeypatch):
    class Config(dict):
        def smoke(self):
            return Config(steps=1)

    monkeypatch.delenv("KITLIB_RECORD", raising=False)
    monkeypatch.setenv("KITLIB_SMOKE", "1")
    run = kr.start("flooding", profile="full", seed=0, device="cpu",
                   profiles={"quick": Config(steps=10), "full": Config(steps=1000)})
    assert run.smoke and run.config == {"steps": 1}
    ledger = ClaimsLedger("flooding")
    ledger.check_range("X", "s", "src", 2.0, high=1)
    run.finish(ledger)   # no raise


def test_scorecard_reads_latest_full_record_and_ignores_smoke(tmp_path):
    from kitlib.sphinxext import _records, _summary

    (tmp_path / "book").mkdir()
    (tmp_path / "results").mkdir()
    write_json_atomic(tmp_path / "book" / "flooding.json", _record())
    write_json_atomic(tmp_path / "results" / "a.json",
                      _record(profile="full", device_name="NVIDIA H100", started="2026-11-20T00:00:00+00:00"))
    write_json_atomic(tmp_path / "results" / "b.json",
                      _record(profile="full", device_name="NVIDIA H200", started="2026-11-21T00:00:00+00:00"))
    write_json_atomic(tmp_path / "results" / "c.json",
                      _record(profile="full", smoke=True, started="2026-11-22T00:00:00+00:00"))
    book, full = _records(tmp_path)
    assert book["flooding"]["profile"] == "quick"
    assert full["flooding"]["device_name"] == "NVIDIA H200"
    assert _summary(full["flooding"]).startswith("✓ 1/2 claims (1 soft not holding) (full) · NVIDIA H200")
    failing = _record()
    failing["claims"][0]["holds"] = False
    assert _summary(failing).startswith("✗ 0/2 claims (1 soft not holding) · CPU")
    assert _summary(None) == "—"


def test_volatile_values_are_marked_for_the_sanitizer():
    import re

    ledger = ClaimsLedger("demo", echo=False)
    ledger.check_range("T", "speed-up", "src", 7.25, low=20, hard=False, volatile=True)
    assert "7.25 (timing)" in ledger._repr_html_() and "7.25 (timing)" in repr(ledger)
    pattern = re.search(r"regex: (.*)", (ROOT_TESTS / "nbval_sanitize.cfg").read_text().split("[volatile-claim-values]")[1])
    assert re.sub(pattern.group(1), "<TIMING>", repr(ledger)).count("<TIMING>") == 1
    assert ledger.claims[0].as_record()["volatile"] is True
