"""Execute chapters: jupytext source → papermill (parameters injected) → notebook + run record.

Everything is written to a temporary folder first and moved into place only when the chapter ran to the
end, so a failed run leaves the previous good outputs untouched (its partial notebook is kept elsewhere and
its path printed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .chapters import chapter_source, get_chapter, project_root
from .record import complete_record, hard_failures, write_json_atomic

# The kernel's own log line "Kernel is running over TCP without encryption" (ipykernel 7) would be printed for
# every chapter; the kernel runs on this machine's loopback only.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
KERNEL_START_ATTEMPTS = 3


def with_kernel_start_retry(execute, attempts: int = KERNEL_START_ATTEMPTS):
    """``execute()``, started again when its kernel never came up ("Kernel didn't respond").

    jupyter_client picks a kernel's ports by binding free ones and releasing them before the kernel binds them;
    a kernel starting at the same moment (two test workers, a seed sweep's jobs) can take one in between, and
    the new kernel dies with "Address already in use". No cell has run then, so starting again is safe. Any
    other error, and a kernel that dies while running cells, is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return execute()
        except RuntimeError as err:
            if "Kernel didn't respond" not in str(err) or attempt == attempts:
                raise


class ChapterNotWrittenError(FileNotFoundError):
    """A valid slug whose chapter source does not exist yet."""


@dataclass
class RunOutcome:
    slug: str
    ok: bool
    message: str
    notebook: Path | None = None
    record: dict | None = None


def git_commit(root: Path) -> str:
    """Short commit of the repository, with -dirty when it has uncommitted changes; 'unknown' without git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def executed_with_line(record: dict) -> str:
    smoke = " (smoke test: first steps only, claims not enforced)" if record.get("smoke") else ""
    day = record["started"][:10]
    return (f"*Executed with profile **{record['profile']}**{smoke}, seed {record['seed']}, on "
            f"{record['device_name']}, in {record['wall_s']:.0f} s ({day}, kitlib {record['versions']['kitlib']}, "
            f"commit `{record['git_commit']}`).*")


def _decorate(notebook, record: dict) -> None:
    """Hide the parameters cells (declared and injected) and say on the page what produced it.

    The injected ``record_path`` pointed into the runner's scratch folder, which is gone: it is cleared, so
    that re-executing the notebook (nbval) writes no record."""
    import re

    import nbformat

    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("injected-parameters" in tags or "parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")      # the line under the title says what they were
        if "injected-parameters" in tags:
            cell.source = re.sub(r'^record_path = .*$', 'record_path = ""  # the run\'s scratch record, moved away',
                                 cell.source, flags=re.M)
    first_markdown = next((i for i, c in enumerate(notebook.cells) if c.cell_type == "markdown"), -1)
    line = nbformat.v4.new_markdown_cell(executed_with_line(record))
    line.metadata["tags"] = ["kitlib-executed-with"]
    notebook.cells.insert(first_markdown + 1, line)


def run_chapter(slug: str, *, profile: str = "quick", seed: int = 0, device: str = "auto",
                out_dir: Path | None = None, smoke: bool = False, root: Path | None = None) -> RunOutcome:
    """Execute ``chapters/<slug>.md`` and write ``out_dir/<slug>.ipynb`` and ``out_dir/<slug>.json``."""
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    get_chapter(slug)
    root = Path(root or project_root())
    src = chapter_source(slug, root)
    if not src.exists():
        raise ChapterNotWrittenError(f"chapter {slug!r} is planned but not written yet ({src} is missing)")
    out_dir = Path(out_dir or root / "book")
    out_dir.mkdir(parents=True, exist_ok=True)

    notebook = jupytext.read(src)
    if not any("parameters" in c.metadata.get("tags", []) for c in notebook.cells):
        return RunOutcome(slug, False, f"{src}: no code cell is tagged 'parameters'")
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                                "language": "python"})

    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{slug}-"))
    record_path = work / f"{slug}.json"
    notebook_path = work / f"{slug}.ipynb"
    saved_env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TQDM_DISABLE")}
    show_progress = saved_env["TQDM_DISABLE"] in (None, "", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["TQDM_DISABLE"] = "1"  # no progress bars inside the notebook; the runner shows cell progress
    parameters = {"slug": slug, "profile": profile, "seed": seed, "device": device, "smoke": bool(smoke),
                  "record_path": str(record_path)}
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()

    def completed_record() -> dict | None:
        if not record_path.exists():
            return None
        return complete_record(json.loads(record_path.read_text()), started=started,
                               wall_s=time.monotonic() - t0, git_commit=git_commit(root))

    try:
        executed = with_kernel_start_retry(lambda: papermill.execute_notebook(
            notebook, str(notebook_path), parameters=parameters, kernel_name="python3", language="python",
            cwd=str(src.parent), progress_bar=show_progress, extra_arguments=KERNEL_ARGUMENTS))
    except PapermillExecutionError as err:
        record = completed_record()   # written when only the claims failed: seed sweeps still count them
        kept = Path(tempfile.mkdtemp(prefix=f"kitlib-failed-{slug}-"))
        for path in work.iterdir():
            shutil.move(str(path), kept / path.name)
        shutil.rmtree(work, ignore_errors=True)
        evalue = str(err.evalue).strip().splitlines()[-1] if str(err.evalue).strip() else ""
        return RunOutcome(slug, False, f"cell {err.exec_count} failed with {err.ename}: {evalue}\n"
                                       f"  partial notebook kept at {kept / notebook_path.name}", record=record)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    try:
        record = completed_record()
        if record is None:
            return RunOutcome(slug, False, "the chapter ended without calling run.finish(): no run record")
        _decorate(executed, record)
        nbformat.write(executed, notebook_path)
        write_json_atomic(record_path, record)
        os.replace(notebook_path, out_dir / notebook_path.name)
        os.replace(record_path, out_dir / record_path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    held = sum(c["holds"] for c in record["claims"])
    failed = hard_failures(record)
    note = f", hard claims not enforced in smoke mode: {', '.join(failed)} fail" if failed else ""
    return RunOutcome(slug, True, f"{held}/{len(record['claims'])} claims hold, {record['wall_s']:.0f} s{note}",
                      out_dir / notebook_path.name, record)
