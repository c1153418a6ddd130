"""One run of a chapter: seed, device, profile, and the run record it ends with.

A chapter's first cells do::

    run = kitlib.run.start("flooding", profile=profile, seed=seed, device=device, profiles=PROFILES)
    cfg = run.config

and its last cell ``run.finish(ledger)``, which shows the claims table, writes the run record when the
runner asked for one (environment variable ``KITLIB_RECORD``) and raises if a hard claim failed.

``KITLIB_SMOKE=1`` (set by ``python -m kitlib run --smoke``) runs a profile's configuration cut down by its
``smoke()`` method to its first steps: it checks that a full-profile run builds, without enforcing claims.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .chapters import get_chapter

PROFILES: tuple[str, ...] = ("quick", "full")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


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
    started_monotonic: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        smoke = " (smoke: first steps only)" if self.smoke else ""
        return f"{self.slug}: profile {self.profile}{smoke}, seed {self.seed}, {device_description(self.device)}"

    def seeds(self, count: int) -> list[int]:
        """``count`` distinct seeds derived from the run's seed: seed, seed+1, ... (readable in the record)."""
        return [self.seed + k for k in range(count)]

    def record(self, ledger) -> dict[str, Any]:
        """The kernel's part of the run record; the runner adds wall time, start time and git commit."""
        chapter = get_chapter(self.slug)
        config = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)
        rec: dict[str, Any] = {
            "chapter": self.slug,
            "title": chapter.title,
            "profile": self.profile,
            "seed": self.seed,
            "smoke": self.smoke,
            "device": self.device.type,
            "device_name": device_description(self.device),
            "parameters": {"profile": self.profile, "seed": self.seed, "device": self.requested_device},
            "config": config,
            "kernel_s": round(time.monotonic() - self.started_monotonic, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__, "kitlib": __version__},
            "claims": [c.as_record() for c in ledger.claims],
        }
        if self.device.type == "cuda":
            rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return rec

    def finish(self, ledger) -> None:
        """Write the record (when the runner asked for one), then raise if a hard claim failed.

        In smoke mode nothing is enforced: the point is that every cell ran."""
        path = os.environ.get("KITLIB_RECORD")
        if path:
            Path(path).write_text(json.dumps(self.record(ledger), indent=2, ensure_ascii=False))
        if not self.smoke:
            ledger.raise_if_failed()


def start(slug: str, *, profile: str, seed: int, device: str, profiles: Mapping[str, Any]) -> Run:
    """Validate the parameters, seed everything, pick the device, choose the profile's configuration.

    Threads: ``OMP_NUM_THREADS`` (the runner sets 1 unless the user chose) also caps torch's intra-op threads."""
    get_chapter(slug)
    config = select_profile(profiles, profile)
    smoke = os.environ.get("KITLIB_SMOKE", "") == "1"
    if smoke:
        config = config.smoke()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    rng = seed_everything(seed)
    run = Run(slug=slug, profile=profile, seed=seed, device=pick_device(device), config=config, rng=rng,
              smoke=smoke, requested_device=device)
    print(run.describe(), file=sys.stdout)
    return run
