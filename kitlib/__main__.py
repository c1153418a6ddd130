"""Command line: ``python -m kitlib run [SLUG ...]``, ``seeds SLUG ...``, ``list``, ``data`` and ``course``.

Bad input (unknown slug, profile or device, CUDA asked for on a machine without it, a negative seed) is
refused with exit status 2 before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .chapters import DEVICES, PROFILES, SLUGS, chapter_source, get_chapter, project_root, written_chapters


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {value}")
    return value


def _seed_list(text: str) -> list[int]:
    from .seeds import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be a positive integer, got {text!r}")
    return value


def _check_slugs(parser: argparse.ArgumentParser, slugs: list[str]) -> None:
    unknown = [s for s in slugs if s not in SLUGS]
    if unknown:
        parser.error(f"unknown chapter(s) {', '.join(map(repr, unknown))}; valid slugs: {', '.join(SLUGS)}")
    missing = [s for s in slugs if not chapter_source(s).exists()]
    if missing:
        written = ", ".join(c.slug for c in written_chapters()) or "none"
        parser.error(f"chapter(s) {', '.join(missing)} not written yet; written chapters: {written}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kitlib",
                                     description="Run and list the chapters of the executable book.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{run,seeds,list,data,course}")

    run = verbs.add_parser("run", help="execute chapters with papermill; write DIR/<slug>.ipynb and .json",
                           description="Execute chapters (all written ones when no slug is given) through "
                                       "papermill and write DIR/<slug>.ipynb and DIR/<slug>.json. Exit status "
                                       "0 only if every chapter ran and every hard claim held.")
    run.set_defaults(subparser=run)
    run.add_argument("slugs", nargs="*", metavar="SLUG", help=f"chapter slugs: {', '.join(SLUGS)}")
    run.add_argument("--profile", default="quick", choices=PROFILES,
                     help="quick: 2 CPU cores, about a minute a chapter; full: one GPU, at most 8 minutes")
    run.add_argument("--seed", type=_seed, default=0, help="non-negative integer seed (default 0)")
    run.add_argument("--device", default="auto", choices=DEVICES, help="auto picks CUDA when present")
    run.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: book/)")
    run.add_argument("--smoke", action="store_true",
                     help="run the profile's configuration for its first steps only, claims not enforced: "
                          "checks that e.g. the full profile builds, in seconds, on CPU")

    seeds = verbs.add_parser("seeds", help="run chapters on many seeds; write results/seeds/<slug>.json",
                             description="Run each chapter once per seed (on the CPU, N one-thread jobs at a "
                                         "time) and write results/seeds/<slug>.json: per claim, on how many "
                                         "seeds it held and the spread of its value and null. Exit status 0 "
                                         "only if every hard claim held on every seed.")
    seeds.set_defaults(subparser=seeds)
    seeds.add_argument("slugs", nargs="+", metavar="SLUG", help=f"chapter slugs: {', '.join(SLUGS)}")
    seeds.add_argument("--seeds", type=_seed_list, default=list(range(10)), metavar="LIST",
                       help="seeds as 0-9 or 0,3,7 (default 0-9)")
    seeds.add_argument("--profile", default="quick", choices=PROFILES, help="profile to run (default quick)")
    seeds.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                       help="parallel one-thread runs (default 1; at most the machine's cores is sensible)")

    data = verbs.add_parser("data", help="the optional data sets (MNIST, CIFAR-10, WikiText-2): status and fetch",
                            description="Without a verb: a table of the optional data sets, the chapters that "
                                        "use them, their folder in $KITLIB_DATA (default ~/.cache/kitlib), "
                                        "present or missing, and whether they match the official checksums.")
    data.set_defaults(subparser=data)
    data_verbs = data.add_subparsers(dest="data_verb", metavar="{fetch}")
    fetch = data_verbs.add_parser("fetch", help="download, verify and unpack data sets into the cache",
                                  description="Download from the official sources (or --mirror), verify the "
                                              "published checksums, unpack into the layout the loaders read. "
                                              "Nothing is left half-written on failure.")
    fetch.set_defaults(subparser=fetch)
    fetch.add_argument("names", nargs="+", metavar="NAME", help="mnist, cifar10, wikitext2, or all")
    fetch.add_argument("--mirror", metavar="URL", help="a server holding the same files (tried instead)")

    lister = verbs.add_parser("list", help="each chapter with the claims and wall time of its last run",
                              description="Print each chapter's slug, title, and the claims held / total and "
                                          "wall time of its last run record in DIR.")
    lister.add_argument("--out", type=Path, default=None, metavar="DIR", help="records folder (default: book/)")
    lister.add_argument("--notebooks", action="store_true",
                        help="print only the paths of the written chapters' executed notebooks in DIR, "
                             "longest run first")

    course = verbs.add_parser("course", help="the course pack: student and instructor notebooks of chapters",
                              description="Write DIR/student/<slug>.ipynb (each exercise's solution replaced by an "
                                          "answer cell), DIR/instructor/<slug>.ipynb (solutions in place) and "
                                          "DIR/README.md, from chapters/<slug>.md (every written chapter when no "
                                          "slug is given). With --execute, run every notebook and exit 0 only "
                                          "if every instructor check prints 'correct' and every student check "
                                          "'not answered yet'.")
    course.set_defaults(subparser=course)
    course.add_argument("slugs", nargs="*", metavar="SLUG", help=f"chapter slugs: {', '.join(SLUGS)}")
    course.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder, e.g. course/")
    course.add_argument("--execute", action="store_true",
                        help="execute every notebook (a minute or so each on one core) and verify the checks")
    course.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                        help="notebooks executed at a time with --execute (default 1)")
    return parser


def _course(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .course import ExerciseFormatError
    from .course_pack import build_pack, execute_pack, write_readme

    _check_slugs(args.subparser, args.slugs)
    slugs = args.slugs or [c.slug for c in written_chapters()]
    out = args.out
    if out.exists() and not out.is_dir():
        args.subparser.error(f"--out {out} exists and is not a folder; name a folder, e.g. --out course/")
    _writable_folder(out, verb="course")
    try:
        written = build_pack(slugs, out)
    except ExerciseFormatError as err:
        print(f"python -m kitlib course: {err}", file=sys.stderr)
        return 2
    checks = None
    if args.execute:
        bar = tqdm(total=len(written), desc="executing notebooks", unit="notebook")

        def progress(check):
            bar.update(1)
            verdict = "ok" if check.ok else "FAILED: " + "; ".join(check.problems)
            bar.write(f"{check.role}/{check.slug}.ipynb: {check.wall_s:.0f} s, {verdict}")

        checks = execute_pack(slugs, out, jobs=args.jobs, progress=progress)
        bar.close()
    write_readme(out, slugs, checks=checks)
    print(f"wrote {len(written)} notebooks and README.md under {out}")
    if checks is not None:
        failed = [c for c in checks if not c.ok]
        print(f"{len(checks) - len(failed)}/{len(checks)} notebooks verified"
              + (f"; failed: {', '.join(f'{c.role}/{c.slug}' for c in failed)}" if failed else ""))
        return 1 if failed else 0
    return 0


def _run(args: argparse.Namespace) -> int:
    parser = args.subparser
    _check_slugs(parser, args.slugs)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda was asked for, but this machine has no CUDA device; use --device cpu")
    _writable_folder(args.out or project_root() / "book")
    slugs = args.slugs or [c.slug for c in written_chapters()]
    if not slugs:
        print("no chapters are written yet (chapters/*.md)", file=sys.stderr)
        return 1

    from .runner import run_chapter

    failures = 0
    for i, slug in enumerate(slugs, 1):
        print(f"[{i}/{len(slugs)}] {slug} (profile {args.profile}, seed {args.seed}, device {args.device}) ...",
              flush=True)
        outcome = run_chapter(slug, profile=args.profile, seed=args.seed, device=args.device, out_dir=args.out,
                              smoke=args.smoke)
        print(f"[{i}/{len(slugs)}] {slug}: {'ok' if outcome.ok else 'FAILED'}: {outcome.message}", flush=True)
        failures += not outcome.ok
    return 1 if failures else 0


def _data(args: argparse.Namespace) -> int:
    from .data import data_dir
    from .data_fetch import DATASETS, DataFetchError, fetch, status

    if args.data_verb is None:
        print(f"data cache: {data_dir()} (set KITLIB_DATA to use another folder)")
        print(f"{'name':<10} {'used by':<14} {'folder':<42} {'present':<8} official checksums")
        for spec in DATASETS.values():
            st = status(spec)
            print(f"{spec.name:<10} {', '.join(spec.chapters):<14} {str(st.folder):<42} "
                  f"{'yes' if st.present else 'missing':<8} {st.checksums}")
        return 0
    names = list(DATASETS) if "all" in args.names else args.names
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        args.subparser.error(f"unknown data set(s) {', '.join(unknown)}; choose {', '.join(DATASETS)} or all")
    failures = 0
    for name in names:
        try:
            folder = fetch(DATASETS[name], mirror=args.mirror)
        except DataFetchError as err:
            print(f"{name}: FAILED: {err}", file=sys.stderr)
            failures += 1
        else:
            print(f"{name}: verified and unpacked into {folder}")
    return 1 if failures else 0


def _writable_folder(folder: Path, verb: str = "run") -> None:
    """Exit 2 with one line when the output folder cannot be created or written, before any chapter runs."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        print(f"python -m kitlib {verb}: --out {folder} cannot be created or written: {err.strerror or err}",
              file=sys.stderr)
        sys.exit(2)


def _seeds(args: argparse.Namespace) -> int:
    from .seeds import hard_claims_not_always_held, run_sweep, sweep_path

    _check_slugs(args.subparser, args.slugs)
    status = 0
    for slug in args.slugs:
        print(f"{slug}: profile {args.profile}, seeds {args.seeds[0]}..{args.seeds[-1]} "
              f"({len(args.seeds)} runs, {args.jobs} at a time) ...", flush=True)
        summary = run_sweep(slug, args.seeds, profile=args.profile, jobs=args.jobs)
        weak = hard_claims_not_always_held(summary)
        crashed = [r["seed"] for r in summary["runs"] if r["wall_s"] is None]
        print(f"{slug}: wrote {sweep_path(slug)}; "
              + (f"hard claims not held on every seed: {', '.join(weak)}" if weak
                 else "every hard claim held on every seed")
              + (f"; runs that left no record: seeds {crashed}" if crashed else ""), flush=True)
        status |= bool(weak or crashed)
    return status


def _list(args: argparse.Namespace) -> int:
    from .record import claims_held, find_records

    folder = args.out or project_root() / "book"
    records = {r["chapter"]: r for r in find_records(folder)} if folder.exists() else {}
    if args.notebooks:  # longest run first: two test workers given these in turn then finish at about the same time
        slugs = [c.slug for c in written_chapters()]
        for slug in sorted(slugs, key=lambda s: -records.get(s, {}).get("wall_s", 0.0)):
            print(folder / f"{slug}.ipynb")
        return 0
    for slug in SLUGS:
        chapter = get_chapter(slug)
        if not chapter_source(slug).exists():
            status = "not written yet"
        elif slug in records:
            r = records[slug]
            held, total = claims_held(r)
            status = f"{held}/{total} claims hold, {r['wall_s']:.0f} s, profile {r['profile']}, {r['started'][:10]}"
        else:
            status = "not run yet"
        print(f"{slug:<22} {chapter.title:<52} {status}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb == "run":
        return _run(args)
    if args.verb == "seeds":
        return _seeds(args)
    if args.verb == "data":
        return _data(args)
    if args.verb == "course":
        return _course(args)
    return _list(args)


if __name__ == "__main__":
    sys.exit(main())
