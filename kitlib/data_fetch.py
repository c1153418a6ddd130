"""The optional data sets of the full profiles: where they come from, their official checksums, whether the
cache has them, and how to fetch them (``python -m kitlib data`` and ``python -m kitlib data fetch NAME``).

Checksums are the ones the publishers or torchvision / torchtext list: MD5 of MNIST's four gzipped IDX files
and of each CIFAR-10 batch (torchvision), of ``cifar-10-python.tar.gz`` (torchvision) and of
``wikitext-2-v1.zip`` (torchtext). A fetch downloads into a scratch folder inside the cache, verifies, unpacks,
and only then moves the data set's folder into place: a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .data import data_dir

MANIFEST = ".kitlib-fetched.json"   # written by a fetch: the archive's checksum and each unpacked file's


class DataFetchError(RuntimeError):
    """A download that failed, was cut short, or did not match its published checksum."""


@dataclass(frozen=True)
class Download:
    """One file on the server (relative to a source URL) and its published MD5."""

    filename: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """An optional data set: what to download, how to unpack it, and the folder the loaders read."""

    name: str
    title: str
    chapters: tuple[str, ...]
    folder: str                      # under the cache folder, as kitlib.data's loaders expect it
    sources: tuple[str, ...]         # base URLs, tried in order
    downloads: tuple[Download, ...]
    unpack: str = "none"             # "none": files are kept as downloaded; "tar" or "zip": one archive
    files: dict[str, str] = field(default_factory=dict)   # file in the folder → official MD5 ("" if none)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", "MNIST (LeCun et al.)", ("wgan",), "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        (Download("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
         Download("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
         Download("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
         Download("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
        files={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
               "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
               "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
               "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "cifar10": DatasetSpec(
        "cifar10", "CIFAR-10 (Krizhevsky)", ("flooding",), "cifar-10-batches-py",
        ("https://www.cs.toronto.edu/~kriz/",),
        (Download("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),), unpack="tar",
        files={"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
               "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
               "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"}),
    "wikitext2": DatasetSpec(
        "wikitext2", "WikiText-2 (Merity et al.), tokenised v1", ("seq2seq-stop",), "wikitext-2",
        ("https://s3.amazonaws.com/research.metamind.io/wikitext/",),
        (Download("wikitext-2-v1.zip", "542ccefacc6c27f945fb54453812b3cd"),), unpack="zip",
        files={"wiki.train.tokens": "", "wiki.valid.tokens": "", "wiki.test.tokens": ""}),
}


def dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose {', '.join(DATASETS)} or all")
    return DATASETS[name]


def md5_of(path: Path) -> str:
    digest = hashlib.md5()  # the published checksums are MD5: integrity, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- status ------------------------------------------------------------------------------------------------
@dataclass
class Status:
    spec: DatasetSpec
    folder: Path
    present: bool
    checksums: str      # "match", "MISMATCH: ...", "not checked: ..." or "—"


def status(spec: DatasetSpec, cache: Path | None = None) -> Status:
    """Whether the data set's files are in the cache and match the official checksums (or, for files with no
    published checksum, the ones recorded when ``data fetch`` verified the archive they came from)."""
    folder = Path(cache or data_dir()) / spec.folder
    present = all((folder / f).exists() or (folder / f.removesuffix(".gz")).exists() for f in spec.files)
    if not present:
        return Status(spec, folder, False, "—")
    manifest = {}
    if (folder / MANIFEST).exists():
        try:
            manifest = json.loads((folder / MANIFEST).read_text()).get("files", {})
        except (json.JSONDecodeError, AttributeError):
            manifest = {}
    bad, unchecked = [], []
    for name, official in spec.files.items():
        path = folder / name
        if not path.exists():                         # an uncompressed MNIST file: no published checksum
            unchecked.append(name.removesuffix(".gz"))
            continue
        expected = official or manifest.get(name, "")
        if not expected:
            unchecked.append(name)
        elif md5_of(path) != expected:
            bad.append(name)
    if bad:
        return Status(spec, folder, True, f"MISMATCH: {', '.join(bad)}")
    if unchecked:
        return Status(spec, folder, True, f"not checked (no checksum for {', '.join(unchecked)})")
    return Status(spec, folder, True, "match")


# -- fetching ----------------------------------------------------------------------------------------------
def _download(url: str, target: Path, expected_md5: str, progress: bool) -> None:
    """Stream ``url`` into ``target``; raise DataFetchError when it is cut short or its MD5 differs."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "kitlib-data-fetch"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(target, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            digest, received = hashlib.md5(), 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataFetchError(f"{url}: download failed ({getattr(err, 'reason', None) or err})") from None
    except Exception as err:   # http.client.IncompleteRead and friends: the connection closed early
        raise DataFetchError(f"{url}: download interrupted ({type(err).__name__}: {err})") from None
    if total is not None and received != total:
        raise DataFetchError(f"{url}: download interrupted after {received} of {total} bytes")
    if digest.hexdigest() != expected_md5:
        raise DataFetchError(f"{url}: MD5 {digest.hexdigest()} differs from the published {expected_md5} "
                             "(a damaged or different file)")


def _safe_members(archive: zipfile.ZipFile) -> list[str]:
    names = archive.namelist()
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise DataFetchError(f"archive member {name!r} would be written outside the cache folder")
    return names


def _unpack(spec: DatasetSpec, downloaded: list[Path], into: Path) -> Path:
    """Unpack (or move) the downloads; return the folder that holds the data set's files."""
    if spec.unpack == "none":
        folder = into / spec.folder
        folder.mkdir(parents=True)
        for path in downloaded:
            shutil.move(str(path), folder / path.name)
        return folder
    (archive,) = downloaded
    try:
        if spec.unpack == "tar":
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")     # refuses absolute paths, links out, devices
        else:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(into, members=_safe_members(zipped))
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise DataFetchError(f"{archive.name}: cannot be unpacked ({err})") from None
    found = [p for p in into.rglob(spec.folder) if p.is_dir()]
    if not found:
        raise DataFetchError(f"{archive.name} has no folder {spec.folder}/")
    return found[0]


def fetch(spec: DatasetSpec, cache: Path | None = None, *, mirror: str | None = None,
          progress: bool = True) -> Path:
    """Download, verify, unpack and move ``spec`` into ``cache/<folder>``; return that folder.

    Each download is tried from ``mirror`` (when given) or from the official sources in order; everything
    happens in a scratch folder inside the cache, moved into place only once every checksum matched."""
    cache = Path(cache or data_dir())
    cache.mkdir(parents=True, exist_ok=True)
    sources = (mirror,) if mirror else spec.sources
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".fetch-{spec.name}-") as scratch_name:
        scratch = Path(scratch_name)
        downloaded = []
        for item in spec.downloads:
            target, errors = scratch / item.filename, []
            for base in sources:
                try:
                    _download(base.rstrip("/") + "/" + item.filename, target, item.md5, progress)
                    break
                except DataFetchError as err:
                    errors.append(str(err))
            else:
                raise DataFetchError(f"{spec.name}: could not fetch {item.filename}: " + "; ".join(errors))
            downloaded.append(target)
        folder = _unpack(spec, downloaded, scratch / "unpacked")
        checksums = {}
        for name, official in spec.files.items():
            path = folder / name
            if not path.exists():
                raise DataFetchError(f"{spec.name}: the download has no {spec.folder}/{name}")
            checksums[name] = md5_of(path)
            if official and checksums[name] != official:
                raise DataFetchError(f"{spec.name}: {name} has MD5 {checksums[name]}, not the published {official}")
        (folder / MANIFEST).write_text(json.dumps(
            {"archives": {d.filename: d.md5 for d in spec.downloads}, "files": checksums}, indent=2))
        final = cache / spec.folder
        if final.exists():
            os.replace(final, scratch / "previous")       # same file system: both renames are atomic
        os.replace(folder, final)
    return final
