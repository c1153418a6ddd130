"""python -m kitlib data / data fetch, against a throw-away HTTP server on 127.0.0.1 serving tiny archives that
the tests write (their checksums passed in), and the loaders' errors on damaged files."""

import dataclasses
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile

from pathlib import Path

import numpy as np
import pytest

from kitlib.data import DataCorruptError, DataNotFoundError, load_cifar10, load_mnist, load_wikitext2_sentences
from kitlib.data_fetch import DATASETS, MANIFEST, DataFetchError, Download, fetch, status


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_bytes(array) -> bytes:
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the test's folder; /cut/NAME promises the whole file but sends half of it, then hangs up."""

    def do_GET(self):
        if self.path.startswith("/cut/"):
            data = (self.server.root / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def translate_path(self, path):
        return str(self.server.root / path.lstrip("/"))

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root = root
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _tiny_mnist(root):
    """The four gzipped IDX files, written where the server serves them; returns the spec with their MD5s."""
    files = {"train-images-idx3-ubyte.gz": np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256,
             "train-labels-idx1-ubyte.gz": [3, 5],
             "t10k-images-idx3-ubyte.gz": np.zeros((1, 28, 28)), "t10k-labels-idx1-ubyte.gz": [9]}
    sums = {}
    for name, array in files.items():
        data = gzip.compress(idx_bytes(array))
        (root / name).write_bytes(data)
        sums[name] = md5(data)
    return dataclasses.replace(DATASETS["mnist"], downloads=tuple(Download(n, s) for n, s in sums.items()),
                               files=sums)


def test_fetch_mnist_verifies_and_unpacks_where_the_loader_reads(server, tmp_path):
    root, url = server
    spec = _tiny_mnist(root)
    cache = tmp_path / "cache"
    assert not status(spec, cache).present
    folder = fetch(spec, cache, mirror=url, progress=False)
    assert folder == cache / "mnist"
    x, y = load_mnist("train", root=cache)
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 5]
    assert status(spec, cache).checksums == "match"
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes([8])))
    assert status(spec, cache).checksums == "MISMATCH: t10k-labels-idx1-ubyte.gz"
    assert sorted(p.name for p in cache.iterdir()) == ["mnist"]          # no scratch folder left


def test_a_wrong_checksum_leaves_nothing_behind(server, tmp_path):
    root, url = server
    spec = _tiny_mnist(root)
    wrong = dataclasses.replace(spec, downloads=(Download(spec.downloads[0].filename, "0" * 32),) + spec.downloads[1:])
    cache = tmp_path / "cache"
    with pytest.raises(DataFetchError, match="differs from the published 0{32}"):
        fetch(wrong, cache, mirror=url, progress=False)
    assert list(cache.iterdir()) == []


def test_an_interrupted_download_leaves_the_previous_copy_untouched(server, tmp_path):
    root, url = server
    spec = _tiny_mnist(root)
    cache = tmp_path / "cache"
    fetch(spec, cache, mirror=url, progress=False)
    before = {p.name: p.read_bytes() for p in (cache / "mnist").iterdir()}
    with pytest.raises(DataFetchError, match="interrupted"):
        fetch(spec, cache, mirror=f"{url}/cut", progress=False)
    assert {p.name: p.read_bytes() for p in (cache / "mnist").iterdir()} == before
    assert sorted(p.name for p in cache.iterdir()) == ["mnist"]
    with pytest.raises(DataFetchError, match="download failed"):
        fetch(spec, cache, mirror=f"{url}/nothing-here", progress=False)


def _cifar_batch(n, rng):
    return pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n)),
                         b"batch_label": b"tiny"})


def test_fetch_cifar10_from_a_tar_archive_checks_every_batch(server, tmp_path):
    root, url = server
    rng = np.random.default_rng(0)
    batches = {name: _cifar_batch(3, rng) for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    spec = dataclasses.replace(DATASETS["cifar10"],
                               downloads=(Download("cifar-10-python.tar.gz", md5(buffer.getvalue())),),
                               files={name: md5(data) for name, data in batches.items()})
    cache = tmp_path / "cache"
    fetch(spec, cache, mirror=url, progress=False)
    x, y = load_cifar10("train", root=cache)
    assert x.shape == (15, 3, 32, 32) and y.tolist() == [0, 1, 2] * 5
    assert status(spec, cache).checksums == "match"
    bad = dataclasses.replace(spec, files={**spec.files, "test_batch": "1" * 32})
    with pytest.raises(DataFetchError, match="test_batch has MD5"):
        fetch(bad, tmp_path / "other", mirror=url, progress=False)


def test_fetch_wikitext2_from_a_zip_records_the_unpacked_files(server, tmp_path):
    root, url = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for split in ("train", "valid", "test"):
            zipped.writestr(f"wikitext-2/wiki.{split}.tokens", f" = T = \n a {split} sentence . \n")
    (root / "wikitext-2-v1.zip").write_bytes(buffer.getvalue())
    spec = dataclasses.replace(DATASETS["wikitext2"], downloads=(Download("wikitext-2-v1.zip", md5(buffer.getvalue())),))
    cache = tmp_path / "cache"
    fetch(spec, cache, mirror=url, progress=False)
    assert load_wikitext2_sentences("valid", root=cache) == [["a", "valid", "sentence", "."]]
    assert (cache / "wikitext-2" / MANIFEST).exists() and status(spec, cache).checksums == "match"
    (cache / "wikitext-2" / "wiki.test.tokens").write_text("changed")
    assert status(spec, cache).checksums == "MISMATCH: wiki.test.tokens"


def test_zip_members_outside_the_folder_are_refused(server, tmp_path):
    root, url = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("../evil.txt", "x")
    (root / "wikitext-2-v1.zip").write_bytes(buffer.getvalue())
    spec = dataclasses.replace(DATASETS["wikitext2"], downloads=(Download("wikitext-2-v1.zip", md5(buffer.getvalue())),))
    with pytest.raises(DataFetchError, match="outside the cache"):
        fetch(spec, tmp_path / "cache", mirror=url, progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_the_official_checksums_are_the_published_ones():
    # MD5s as torchvision (MNIST, CIFAR-10) and torchtext (WikiText-2) list them
    assert DATASETS["cifar10"].downloads[0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert DATASETS["wikitext2"].downloads[0].md5 == "542ccefacc6c27f945fb54453812b3cd"
    assert DATASETS["mnist"].files["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert {d.filename for d in DATASETS["mnist"].downloads} == set(DATASETS["mnist"].files)


# --- damaged files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, problem", [
    (lambda data: data[: len(data) - 100], "promises"),
    (lambda data: b"\x00\x00\x0d\x03" + data[4:], "not an unsigned-byte IDX file"),
    (lambda data: b"", "not an unsigned-byte IDX file"),
])
def test_a_damaged_idx_file_names_the_file_and_the_fix(tmp_path, damage, problem):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(damage(idx_bytes(np.zeros((2, 28, 28)))))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes([1, 2]))
    with pytest.raises(DataCorruptError, match=problem) as err:
        load_mnist("test", root=tmp_path)
    assert "t10k-images-idx3-ubyte" in str(err.value) and "python -m kitlib data fetch mnist" in str(err.value)
    assert isinstance(err.value, DataNotFoundError)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    (folder / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataCorruptError, match="cannot be read"):
        load_mnist("test", root=tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must not run",))


@pytest.mark.parametrize("content, problem", [
    (b"this is not a pickle", "is not a CIFAR-10 batch"),
    (pickle.dumps(["a", "list"]), "no uint8 array"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}), "1 labels for 2 images"),
    (pickle.dumps({b"data": _RunsCode()}), "global builtins.print is not allowed"),
])
def test_a_damaged_cifar_batch_names_the_file_and_the_fix(tmp_path, capsys, content, problem):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(DataCorruptError, match=problem) as err:
        load_cifar10("test", root=tmp_path)
    assert "test_batch" in str(err.value) and "python -m kitlib data fetch cifar10" in str(err.value)
    assert "this must not run" not in capsys.readouterr().out


def test_an_empty_wikitext_file_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "wiki.train.tokens").write_text(" \n")
    with pytest.raises(DataCorruptError, match="is empty") as err:
        load_wikitext2_sentences("train", root=tmp_path)
    assert "wiki.train.tokens" in str(err.value) and "python -m kitlib data fetch wikitext2" in str(err.value)


# --- command line ----------------------------------------------------------------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kitlib", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_data_table_names_every_set_its_chapters_and_its_state(tmp_path):
    import os

    (tmp_path / "wikitext-2").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "wikitext-2" / f"wiki.{split}.tokens").write_text("a .\n")
    result = _cli("data", env={**os.environ, "KITLIB_DATA": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"mnist", "cifar10", "wikitext2"}
    assert "wgan" in rows["mnist"] and "missing" in rows["mnist"]
    assert "seq2seq-stop" in rows["wikitext2"] and "yes" in rows["wikitext2"] and "not checked" in rows["wikitext2"]
    bad = _cli("data", "fetch", "imagenet")
    assert bad.returncode == 2 and "mnist, cifar10, wikitext2 or all" in bad.stderr


@pytest.mark.parametrize("make_out", [
    lambda tmp: tmp / "a-file" / "out",                 # a path under a file
    lambda tmp: tmp / "read-only" / "out",              # a folder that cannot be written (not as root)
    lambda tmp: Path("/proc/kitlib-out"),               # refused even to root
])
def test_an_unwritable_out_folder_exits_2_with_one_line(tmp_path, make_out):
    import os

    (tmp_path / "a-file").write_text("x")
    (tmp_path / "read-only").mkdir()
    os.chmod(tmp_path / "read-only", 0o500)
    if os.geteuid() == 0 and "read-only" in str(make_out(tmp_path)):
        pytest.skip("root writes into read-only folders")
    result = _cli("run", "flooding", "--out", str(make_out(tmp_path)))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot be created or written" in result.stderr
