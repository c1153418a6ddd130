"""Run records: the JSON file a chapter run leaves next to its executed notebook.

Schema (``validate_record`` checks it): chapter, title, profile, seed, smoke, device, device_name,
parameters, config, started (UTC, ISO 8601), wall_s, peak_rss_mb (and peak_gpu_mb on CUDA),
versions {python, torch, numpy, kitlib}, git_commit, claims [{id, statement, source, value, target,
reported, holds, hard}].
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "chapter": str, "title": str, "profile": str, "seed": int, "smoke": bool, "device": str,
    "device_name": str, "parameters": dict, "config": dict, "started": str, "wall_s": (int, float),
    "peak_rss_mb": (int, float), "versions": dict, "git_commit": str, "claims": list,
}
CLAIM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str, "statement": str, "source": str, "target": str, "reported": str, "holds": bool, "hard": bool,
}


class InvalidRecordError(ValueError):
    """A run record that does not follow the schema."""


def validate_record(record: dict[str, Any]) -> dict[str, Any]:
    """Return the record unchanged, or raise naming every problem found."""
    problems = []
    for name, kind in REQUIRED_FIELDS.items():
        if name not in record:
            problems.append(f"missing field {name!r}")
        elif not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
            problems.append(f"field {name!r} should be {kind}, got {type(record[name]).__name__}")
    if record.get("profile") not in (None, "quick", "full"):
        problems.append(f"profile {record['profile']!r} is not quick or full")
    for key in ("python", "torch", "kitlib"):
        if key not in record.get("versions", {}):
            problems.append(f"versions lacks {key!r}")
    for i, claim in enumerate(record.get("claims", [])):
        for name, kind in CLAIM_FIELDS.items():
            if not isinstance(claim.get(name), kind):
                problems.append(f"claim {i} ({claim.get('id', '?')}): field {name!r} missing or not {kind}")
        if "value" not in claim:
            problems.append(f"claim {i} ({claim.get('id', '?')}): missing 'value'")
    if problems:
        raise InvalidRecordError("invalid run record: " + "; ".join(problems))
    return record


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file in the same folder, so a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
    os.replace(tmp, path)


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
