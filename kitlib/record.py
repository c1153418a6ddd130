"""Run records: the JSON file a chapter run leaves next to its executed notebook, assembled here only.

The kernel writes its part (:func:`kernel_record`, called by ``run.finish()``); the runner completes it with
what only it knows (:func:`complete_record`: start time, wall time, git commit). Schema
(:func:`validate_record` checks it; outside checks read these names): chapter, title, profile, seed, smoke,
device, device_name, parameters, config, started (UTC, ISO 8601), wall_s, peak_rss_mb (and peak_gpu_mb on
CUDA), versions {python, torch, numpy, kitlib}, git_commit, claims [{id, statement, source, kind, value,
target, reported, holds, hard, volatile, null?}] where every hard ``measurement`` claim has
``null: {label, value, holds}`` (``holds``: the claim's bounds evaluated on the null's value).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from .chapters import PROFILES
from .claims import KINDS

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "chapter": str, "title": str, "profile": str, "seed": int, "smoke": bool, "device": str,
    "device_name": str, "parameters": dict, "config": dict, "started": str, "wall_s": (int, float),
    "peak_rss_mb": (int, float), "versions": dict, "git_commit": str, "claims": list,
}
CLAIM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str, "statement": str, "source": str, "kind": str, "target": str, "reported": str, "holds": bool,
    "hard": bool,
}


class InvalidRecordError(ValueError):
    """A run record that does not follow the schema."""


def kernel_record(run, ledger) -> dict[str, Any]:
    """The kernel's part of the run record of ``run`` (a :class:`kitlib.run.Run`) and its claims ledger."""
    import numpy as np
    import torch

    from . import __version__
    from .chapters import get_chapter
    from .run import device_description, peak_rss_mb

    config = run.config
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    rec: dict[str, Any] = {
        "chapter": run.slug,
        "title": get_chapter(run.slug).title,
        "profile": run.profile,
        "seed": run.seed,
        "smoke": run.smoke,
        "device": run.device.type,
        "device_name": device_description(run.device),
        "parameters": {"profile": run.profile, "seed": run.seed, "device": run.requested_device,
                       "smoke": run.smoke},
        "config": config,
        "kernel_s": round(time.monotonic() - run.started_monotonic, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "kitlib": __version__},
        "claims": ledger.records(),
    }
    if run.device.type == "cuda":
        rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(run.device) / 2**20, 1)
    return rec


def complete_record(record: dict[str, Any], *, started: str, wall_s: float, git_commit: str) -> dict[str, Any]:
    """Add what only the runner knows, drop the kernel's own timer, and validate."""
    record = {**record, "started": started, "wall_s": round(wall_s, 1), "git_commit": git_commit}
    record.pop("kernel_s", None)
    return validate_record(record)


def validate_record(record: dict[str, Any]) -> dict[str, Any]:
    """Return the record unchanged, or raise naming every problem found."""
    problems = []
    for name, kind in REQUIRED_FIELDS.items():
        if name not in record:
            problems.append(f"missing field {name!r}")
        elif not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
            problems.append(f"field {name!r} should be {kind}, got {type(record[name]).__name__}")
    if record.get("profile") not in (None, *PROFILES):
        problems.append(f"profile {record['profile']!r} is not one of {', '.join(PROFILES)}")
    for key in ("python", "torch", "kitlib"):
        if key not in record.get("versions", {}):
            problems.append(f"versions lacks {key!r}")
    for i, claim in enumerate(record.get("claims", [])):
        where = f"claim {i} ({claim.get('id', '?')})"
        for name, kind in CLAIM_FIELDS.items():
            if not isinstance(claim.get(name), kind):
                problems.append(f"{where}: field {name!r} missing or not {kind}")
        if "value" not in claim:
            problems.append(f"{where}: missing 'value'")
        if claim.get("kind") not in KINDS:
            problems.append(f"{where}: kind {claim.get('kind')!r} is not one of {', '.join(KINDS)}")
        if claim.get("kind") == "measurement" and claim.get("hard"):
            null = claim.get("null")
            if not (isinstance(null, dict) and isinstance(null.get("label"), str) and "value" in null
                    and isinstance(null.get("holds"), bool)):
                problems.append(f"{where}: a hard measurement needs null {{label, value, holds}}")
    if problems:
        raise InvalidRecordError("invalid run record: " + "; ".join(problems))
    return record


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file in the same folder, so a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.chmod(tmp, 0o644)             # mkstemp makes 0600; a record is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_record(path: Path) -> dict[str, Any]:
    return validate_record(json.loads(Path(path).read_text()))


def claims_held(record: dict[str, Any]) -> tuple[int, int]:
    """(claims that hold, all claims) of a record."""
    claims = record["claims"]
    return sum(c["holds"] for c in claims), len(claims)


def hard_failures(record: dict[str, Any]) -> list[str]:
    return [c["id"] for c in record["claims"] if c["hard"] and not c["holds"]]


def find_records(folder: Path) -> list[dict[str, Any]]:
    """Every valid run record in a folder (invalid or foreign JSON files are skipped), by chapter."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            records.append(load_record(path))
        except (InvalidRecordError, json.JSONDecodeError, AttributeError, TypeError):
            continue
    return records
