"""One run of a chapter: seed, device, profile, the claims ledger, and the run record it ends with.

The runner passes everything as papermill parameters (the chapter's ``parameters`` cell declares them with
defaults for an interactive session)::

    slug, profile, seed, device, smoke, record_path = "flooding", "quick", 0, "auto", False, ""

and the chapter's hidden set-up cell does::

    run = kitlib.run.start(slug, profile=profile, seed=seed, device=device, smoke=smoke,
                           record_path=record_path, profiles=PROFILES)
    cfg = run.config
    claims = run.claims([...])          # every claim, declared once

and its last cell ``run.finish()``: the run record is written (when ``record_path`` is set) and a failed
hard claim raises. ``smoke=True`` (``python -m kitlib run --smoke``) runs a profile's configuration cut down
by its ``smoke()`` method to its first steps: it checks that a full-profile run builds, claims not enforced.
"""

from __future__ import annotations

import os
import random
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .chapters import DEVICES, PROFILES, get_chapter
from .claims import Claim, ClaimsLedger


class UnknownProfileError(ValueError):
    """A profile name other than quick or full."""


class DeviceUnavailableError(RuntimeError):
    """--device cuda on a machine without CUDA."""


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy, torch (CPU and every CUDA device) from one integer.

    Returns a numpy Generator seeded with the same integer, for the chapter's data."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return np.random.default_rng(seed)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without CUDA is an error that suggests ``cpu``."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("--device cuda was asked for, but this machine has no CUDA device; "
                                     "use --device cpu (or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def select_profile(profiles: Mapping[str, Any], profile: str) -> Any:
    """The configuration a chapter declared for ``profile`` (``quick`` or ``full``)."""
    if profile not in PROFILES:
        raise UnknownProfileError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise ValueError(f"the chapter declares no configuration for profile(s) {missing}")
    return profiles[profile]


def device_description(device: torch.device) -> str:
    """'CPU' or the GPU's name, as the book prints it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config_line(config: Any) -> str:
    """'width 256 · seeds 5 · epochs 200': the fields a config dataclass names in its ``headline`` tuple, with
    their values (generated, so the line the reader sees cannot disagree with the configuration)."""
    parts = []
    for name in getattr(config, "headline", ()):
        value = getattr(config, name)
        if isinstance(value, (tuple, list)):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{name.replace('_', ' ')} {value}")
    return " · ".join(parts)


@dataclass
class Run:
    """The state of one chapter run; created by :func:`start`."""

    slug: str
    profile: str
    seed: int
    device: torch.device
    config: Any
    rng: np.random.Generator
    smoke: bool = False
    requested_device: str = "auto"     # as passed (the parameter); ``device`` is what it resolved to
    record_path: str = ""
    started_monotonic: float = field(default_factory=time.monotonic)
    ledger: ClaimsLedger | None = None

    def describe(self) -> str:
        """'quick: width 256 · seeds 5 · epochs 200' (profile, then the config's headline fields, wrapped),
        or the slug, profile, seed and device when the config names no headline fields."""
        import textwrap

        smoke = " (smoke: first steps only)" if self.smoke else ""
        config = config_line(self.config)
        if not config:
            return f"{self.slug}: profile {self.profile}{smoke}, seed {self.seed}, {device_description(self.device)}"
        return "\n".join(textwrap.wrap(f"{self.profile}{smoke}: {config}", width=76, break_long_words=False,
                                        subsequent_indent="  "))

    def seeds(self, count: int) -> list[int]:
        """``count`` distinct seeds derived from the run's seed: seed, seed+1, ... (readable in the record)."""
        return [self.seed + k for k in range(count)]

    def claims(self, declared: Sequence[Claim]) -> ClaimsLedger:
        """The chapter's claims ledger, declared once; its table shows the committed seed sweep's counts."""
        from .seeds import load_sweep

        self.ledger = ClaimsLedger(self.slug, declared, profile=self.profile, sweep=load_sweep(self.slug))
        return self.ledger

    def finish(self) -> None:
        """Write the record (when the runner asked for one), then raise if a hard claim failed or a declared
        claim was never measured. In smoke mode nothing is enforced: the point is that every cell ran."""
        from .record import kernel_record, write_json_atomic

        if self.ledger is None:
            raise RuntimeError("run.finish(): the chapter declared no claims (run.claims([...]))")
        if self.record_path:
            write_json_atomic(Path(self.record_path), kernel_record(self, self.ledger))
        if not self.smoke:
            self.ledger.raise_if_failed()


def start(slug: str, *, profile: str, seed: int, device: str, profiles: Mapping[str, Any], smoke: bool = False,
          record_path: str = "") -> Run:
    """Validate the parameters, seed everything, pick the device, choose the profile's configuration.

    Threads: ``OMP_NUM_THREADS`` (the runner sets 1 unless the user chose) also caps torch's intra-op threads."""
    get_chapter(slug)
    config = select_profile(profiles, profile)
    if smoke:
        config = config.smoke()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    rng = seed_everything(seed)
    run = Run(slug=slug, profile=profile, seed=seed, device=pick_device(device), config=config, rng=rng,
              smoke=bool(smoke), requested_device=device, record_path=str(record_path or ""))
    print(run.describe(), file=sys.stdout)
    return run
