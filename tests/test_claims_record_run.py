"""The claims ledger, the run record schema and the run context (seed, device, profile, finish)."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import kitlib.__main__ as cli
import kitlib.run as kr
from kitlib.claims import (Bounds, Claim, ClaimDeclarationError, ClaimsFailed, ClaimsLedger, at_least, at_most,
                           between, close_to, equal_to)
from kitlib.record import (InvalidRecordError, claims_held, complete_record, find_records, hard_failures,
                           kernel_record, validate_record, write_json_atomic)


ROOT_TESTS = Path(__file__).parent


# --- claims -------------------------------------------------------------------------------------------
def _ledger(*claims, echo=False, profile="quick"):
    return ClaimsLedger("demo", list(claims), echo=echo, profile=profile)


def test_bounds_hold_and_generate_their_own_target_text():
    assert at_most(1).holds(0.5) and not at_most(1).holds(1.5) and at_most(1).describe() == "≤ 1"
    assert at_least(2).describe() == "≥ 2" and between(0, 1).describe() == "in [0, 1]"
    assert equal_to(0).holds(0.0) and not equal_to(0).holds(1e-300) and equal_to(0).describe() == "= 0"
    assert close_to(1.0, rel=0.03).holds(1.02) and not close_to(1.0, rel=0.03).holds(1.05)
    assert close_to(1.0, rel=0.03).describe() == "1 ± 3 %" and close_to(0, abs=1e-8).describe() == "0 ± 1e-08"
    for bad in (float("nan"), None, "x"):
        assert not at_least(0).holds(bad)
    with pytest.raises(ClaimDeclarationError):
        Bounds()
    with pytest.raises(ClaimDeclarationError):
        between(2, 1)


def test_declarations_are_checked():
    with pytest.raises(ClaimDeclarationError, match="null control"):
        Claim("M", "s", "src", kind="measurement", bounds=at_least(1))
    with pytest.raises(ClaimDeclarationError, match="hard=False"):
        Claim("T", "s", "src", kind="timing", bounds=at_least(1))
    with pytest.raises(ClaimDeclarationError, match="kind"):
        Claim("K", "s", "src", kind="guess", bounds=at_least(1))
    with pytest.raises(ClaimDeclarationError, match="no null"):
        Claim("I", "s", "src", kind="identity", bounds=at_most(1), null="zero")
    with pytest.raises(ClaimDeclarationError, match="declared twice"):
        _ledger(Claim("A", "s", "src", kind="identity", bounds=at_most(1)),
                Claim("A", "s", "src", kind="identity", bounds=at_most(2)))


def test_measure_evaluates_the_declared_bounds():
    ledger = _ledger(Claim("A", "s", "src", kind="identity", bounds=between(0, 1)),
                     Claim("B", "s", "src", kind="identity", bounds=at_most(1)),
                     Claim("C", "s", "src", kind="identity", bounds=at_least(0)))
    for cid, value in (("A", 0.5), ("B", 1.5), ("C", float("nan"))):
        ledger.measure(cid, value)
    assert [r.holds for r in ledger.rows] == [True, False, False]
    assert [r.as_record()["target"] for r in ledger.rows] == ["in [0, 1]", "≤ 1", "≥ 0"]
    with pytest.raises(ClaimDeclarationError, match="not declared"):
        ledger.measure("Z", 1.0)


def test_a_null_that_meets_the_bounds_makes_the_claim_vacuous():
    gain = Claim("G", "gain", "paper", kind="measurement", bounds=at_least(2), null="plain training")
    ledger = _ledger(gain)
    ledger.measure("G", 4.5, null=0.3)
    assert ledger.rows[0].holds and not ledger.rows[0].vacuous
    assert ledger.rows[0].as_record()["null"] == {"label": "plain training", "value": 0.3, "holds": False}
    ledger.measure("G", 4.5, null=2.5)      # re-measuring replaces the row
    row = ledger.rows[0]
    assert len(ledger.rows) == 1 and row.vacuous and not row.holds
    assert "VACUOUS" in repr(row) and row.as_record()["null"]["holds"] is True
    with pytest.raises(ClaimDeclarationError, match="null="):
        ledger.measure("G", 4.5)
    with pytest.raises(ClaimDeclarationError, match="no null"):
        _ledger(Claim("I", "s", "src", kind="identity", bounds=at_most(1))).measure("I", 0.0, null=1.0)


def test_compound_claims_have_one_bound_per_component():
    claim = Claim("W9", "s", "src", kind="measurement", null="zero critic",
                  bounds={"ratio": at_least(0.9), "lip_norm": at_most(1.0)})
    assert claim.target() == "ratio ≥ 0.9; lip_norm ≤ 1"
    ledger = _ledger(claim)
    ledger.measure("W9", {"ratio": 0.95, "lip_norm": 1.2}, null={"ratio": 0.0, "lip_norm": 0.0})
    assert not ledger.rows[0].holds            # the component the old target text did not show
    ledger.measure("W9", {"ratio": 0.95, "lip_norm": 0.8}, null={"ratio": 0.0, "lip_norm": 0.0})
    assert ledger.rows[0].holds
    with pytest.raises(ClaimDeclarationError, match="lacks component"):
        ledger.measure("W9", {"ratio": 0.95}, null={"ratio": 0.0, "lip_norm": 0.0})


def test_raise_if_failed_names_hard_failures_and_unmeasured_claims():
    ledger = _ledger(Claim("HARD", "s", "src", kind="identity", bounds=at_most(1)),
                     Claim("SOFT", "s", "src", kind="identity", bounds=at_most(1), hard=False),
                     Claim("OK", "s", "src", kind="identity", bounds=at_most(1)),
                     Claim("LATER", "s", "src", kind="identity", bounds=at_most(1)),
                     Claim("FULL", "s", "src", kind="identity", bounds=at_most(1), profiles=("full",)))
    ledger.measure("HARD", 2.0)
    ledger.measure("SOFT", 2.0)
    ledger.measure("OK", 0.0)
    with pytest.raises(ClaimsFailed, match="HARD") as err:
        ledger.raise_if_failed()
    assert "SOFT" not in str(err.value) and "LATER" in str(err.value) and "FULL" not in str(err.value)
    html = ledger._repr_html_()
    assert "✗" in html and "✓" in html and "1/3 claims hold" in html
    assert repr(ledger.rows[0]).startswith("✗ HARD FAILS")
    with pytest.raises(ClaimDeclarationError, match="profile 'quick'"):
        ledger.measure("FULL", 0.0)


def test_claim_values_become_json():
    ledger = _ledger(Claim("A", "s", "src", kind="identity", bounds={"x": at_most(2), "t": at_least(0)}))
    ledger.measure("A", {"x": np.float64(1.5), "t": torch.tensor(1.0)}, steps=torch.tensor([1, 2]))
    record = json.loads(json.dumps(ledger.rows[0].as_record()))
    assert record["value"] == {"x": 1.5, "t": 1.0} and record["detail"] == {"steps": [1, 2]}


def test_each_verdict_is_printed_under_its_cell(capsys):
    ledger = _ledger(Claim("A", "s", "src", kind="measurement", bounds=at_most(1), hard=False), echo=True)
    ledger.measure("A", 2.0)
    assert capsys.readouterr().out.strip() == "✗ A does not hold (soft): measured 2, target ≤ 1"
    _ledger(Claim("B", "s", "src", kind="identity", bounds=at_most(1))).measure("B", 0.0)
    assert capsys.readouterr().out == ""


def test_the_table_shows_null_and_seeds_held_from_the_sweep():
    ledger = ClaimsLedger("demo", [Claim("G", "gain", "p", kind="measurement", bounds=at_least(2), null="plain")],
                          echo=False, sweep={"profile": "quick", "seeds": list(range(10)),
                                             "claims": {"G": {"held": 9, "of": 10}}})
    ledger.measure("G", 3.0, null=0.1)
    row = ledger.table_rows()[0]
    assert "plain: 0.1" in row and "9/10" in row
    assert "seeds 0–9" in ledger._repr_html_()


# --- record -------------------------------------------------------------------------------------------
def _record(**overrides):
    ledger = _ledger(Claim("F1", "s", "src", kind="measurement", bounds=at_most(1), null="untrained"),
                     Claim("F2", "s", "src", kind="identity", bounds=at_most(1), hard=False))
    ledger.measure("F1", 0.5, null=3.0)
    ledger.measure("F2", 5.0)
    run = kr.Run("flooding", "quick", 0, torch.device("cpu"), {"width": 8}, np.random.default_rng(0))
    record = complete_record(kernel_record(run, ledger), started="2026-11-22T00:00:00+00:00", wall_s=1.0,
                             git_commit="abc")
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
    (lambda r: r["claims"][0].pop("null"), "needs null"),
    (lambda r: r["claims"][1].update(kind="guess"), "kind 'guess'"),
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
    assert cli.PROFILES is kr.PROFILES and cli.DEVICES is kr.DEVICES   # one list, in kitlib.chapters


def test_finish_writes_the_record_then_raises(tmp_path):
    path = tmp_path / "r.json"
    run = kr.start("flooding", profile="quick", seed=3, device="cpu", profiles={"quick": {"a": 1}, "full": {}},
                   record_path=str(path))
    claims = run.claims([Claim("X", "s", "src", kind="identity", bounds=at_most(1))])
    claims.measure("X", 2.0)
    with pytest.raises(ClaimsFailed, match="X"):
        run.finish()
    saved = json.loads(path.read_text())
    assert saved["seed"] == 3 and saved["claims"][0]["holds"] is False and saved["config"] == {"a": 1}
    assert saved["claims"][0]["kind"] == "identity"


def test_smoke_mode_shrinks_the_config_and_does_not_enforce():
    class Config(dict):
        def smoke(self):
            return Config(steps=1)

    run = kr.start("flooding", profile="full", seed=0, device="cpu", smoke=True,
                   profiles={"quick": Config(steps=10), "full": Config(steps=1000)})
    assert run.smoke and run.config == {"steps": 1}
    run.claims([Claim("X", "s", "src", kind="identity", bounds=at_most(1))]).measure("X", 2.0)
    run.finish()   # no raise


def test_the_run_line_is_generated_from_the_config():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config:
        headline = ("width", "flood_levels")
        width: int
        flood_levels: tuple

        def smoke(self):
            return self

    run = kr.start("flooding", profile="quick", seed=0, device="cpu",
                   profiles={"quick": Config(256, (0.0, 0.26)), "full": Config(500, (0.1,))})
    assert run.describe() == "quick: width 256 · flood levels 0.0, 0.26"


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


def test_timings_are_marked_for_the_sanitizer():
    import re

    ledger = _ledger(Claim("T", "speed-up", "src", kind="timing", bounds=at_least(20), hard=False))
    ledger.measure("T", 7.25)
    assert "7.25 (timing)" in ledger._repr_html_() and "7.25 (timing)" in repr(ledger)
    pattern = re.search(r"regex: (.*)", (ROOT_TESTS / "nbval_sanitize.cfg").read_text().split("[volatile-claim-values]")[1])
    assert re.sub(pattern.group(1), "<TIMING>", repr(ledger)).count("<TIMING>") == 1
    assert ledger.rows[0].as_record()["volatile"] is True


def test_scorecard_summarises_the_seed_sweep():
    from kitlib.sphinxext import _seeds_summary

    sweep = {"profile": "quick", "seeds": list(range(10)),
             "claims": {"A": {"hard": True, "held": 10, "of": 10}, "B": {"hard": True, "held": 9, "of": 10},
                        "C": {"hard": False, "held": 0, "of": 10}}}
    assert _seeds_summary(sweep) == "✗ 1/2 hard claims held on every seed (10 seeds, quick)"
    sweep["claims"]["B"]["held"] = 10
    assert _seeds_summary(sweep).startswith("✓ 2/2") and _seeds_summary(None) == "—"
