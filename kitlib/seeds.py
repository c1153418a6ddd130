"""Seed sweeps: run a chapter on many seeds and count, per claim, on how many it held.

``python -m kitlib seeds SLUG [SLUG ...] --seeds 0-9 [--profile quick] [--jobs N]`` runs each chapter once
per seed (N parallel one-thread jobs) and writes ``results/seeds/<slug>.json``::

    {"chapter": ..., "profile": ..., "seeds": [0, ..., 9], "git_commit": ..., "wall_s": {min, median, max},
     "runs": [{"seed", "ok", "wall_s", "message"}],
     "claims": {id: {"held": k, "of": n, "hard", "kind", "target", "failed_seeds": [...],
                     "value": spread, "values": {seed: value}, "null": {"label", "value": spread, "held": m},
                     "detail": {key: spread}}}}

where a spread is ``{"min", "median", "max"}`` of a numeric value (one spread per component for compound
claims). ``detail`` spreads the numeric entries of the claims' ``detail`` (the extra numbers a chapter passes to
``claims.measure``), so that the prose can quote their range over the seeds too; lists and text are left out. A seed whose run crashed counts as "not held" for every claim. The chapter's claims table and the
scorecard show "held k/n" from the committed file.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .chapters import get_chapter, project_root


def parse_seeds(text: str) -> list[int]:
    """'0-9' → 0..9; '0,3,7' and '0-4,7' too. Refuses negatives, empty ranges and repeats."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(p) for p in part.split("-", 1))
                if high < low:
                    raise ValueError
                seeds.extend(range(low, high + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"seeds must look like 0-9 or 0,3,7 (non-negative integers), got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def sweep_path(slug: str, root: Path | None = None) -> Path:
    return (root or project_root()) / "results" / "seeds" / f"{get_chapter(slug).slug}.json"


def load_sweep(slug: str, root: Path | None = None) -> dict[str, Any] | None:
    """The committed sweep of a chapter, or None when there is none (or it cannot be read)."""
    path = sweep_path(slug, root)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _numbers(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or v is None:
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isnan(x):
            out.append(x)
    return out


def spread(values: Sequence[Any]) -> dict[str, Any] | None:
    """min / median / max of numeric values; one spread per key when the values are dicts; None otherwise."""
    if values and all(isinstance(v, dict) for v in values):
        keys = dict.fromkeys(k for v in values for k in v)
        return {k: spread([v.get(k) for v in values]) for k in keys}
    numbers = _numbers(values)
    if not numbers:
        return None
    return {"min": min(numbers), "median": statistics.median(numbers), "max": max(numbers)}


def summarise(slug: str, profile: str, seeds: Sequence[int], records: dict[int, dict | None],
              runs: list[dict[str, Any]], git_commit: str = "unknown") -> dict[str, Any]:
    """The sweep file's content from each seed's run record (None for a run that left no record)."""
    declared: dict[str, dict] = {}
    for seed in seeds:
        for claim in (records.get(seed) or {}).get("claims", []):
            declared.setdefault(claim["id"], claim)
    claims: dict[str, Any] = {}
    for cid, first in declared.items():
        rows = {s: next((c for c in (records.get(s) or {}).get("claims", []) if c["id"] == cid), None)
                for s in seeds}
        held = [s for s, c in rows.items() if c is not None and c["holds"]]
        entry: dict[str, Any] = {
            "held": len(held), "of": len(seeds), "hard": first["hard"], "kind": first["kind"],
            "target": first["target"], "failed_seeds": [s for s in seeds if s not in held],
            "value": spread([c["value"] for c in rows.values() if c is not None]),
            "values": {str(s): c["value"] for s, c in rows.items() if c is not None},
        }
        details = [c["detail"] for c in rows.values() if c is not None and isinstance(c.get("detail"), dict)]
        detail_spreads = {k: v for k, v in (spread(details) or {}).items() if v} if details else {}
        if detail_spreads:
            entry["detail"] = detail_spreads
        nulls = [c["null"] for c in rows.values() if c is not None and c.get("null")]
        if nulls:
            entry["null"] = {"label": nulls[0]["label"], "value": spread([n["value"] for n in nulls]),
                             "held": sum(n["holds"] for n in nulls)}
        claims[cid] = entry
    walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
    return {"chapter": slug, "profile": profile, "seeds": list(seeds), "git_commit": git_commit,
            "wall_s": spread(walls), "runs": runs, "claims": claims}


def hard_claims_not_always_held(summary: dict[str, Any]) -> list[str]:
    return [f"{cid} ({c['held']}/{c['of']})" for cid, c in summary["claims"].items()
            if c["hard"] and c["held"] < c["of"]]


def _one_run(slug: str, profile: str, seed: int, out_dir: str, root: str) -> tuple[int, bool, str, dict | None]:
    from .runner import run_chapter

    outcome = run_chapter(slug, profile=profile, seed=seed, device="cpu", out_dir=Path(out_dir), root=Path(root))
    return seed, outcome.ok, outcome.message, outcome.record


def run_sweep(slug: str, seeds: Sequence[int], *, profile: str = "quick", jobs: int = 1,
              root: Path | None = None, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``slug`` on every seed (``jobs`` at a time, each in its own process) and write its sweep file."""
    from tqdm import tqdm

    from .record import write_json_atomic
    from .runner import git_commit

    root = root or project_root()
    records: dict[int, dict | None] = {}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"kitlib-seeds-{slug}-") as scratch:
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_one_run, slug, profile, s, str(Path(scratch) / f"seed-{s}"), str(root)) for s in seeds]
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"{slug} seeds", unit="run"):
                seed, ok, message, record = future.result()
                records[seed] = record
                runs.append({"seed": seed, "ok": ok, "wall_s": record["wall_s"] if record else None,
                             "message": message})
                report(f"  {slug} seed {seed}: {'ok' if ok else 'FAILED'}: {message}")
    runs.sort(key=lambda r: r["seed"])
    summary = summarise(slug, profile, seeds, records, runs, git_commit(root))
    path = sweep_path(slug, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary)
    return summary
