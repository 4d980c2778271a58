"""The MNIST data module: the IDX reader, the verified downloader and ``load_mnist``.

Downloads are tested against a local HTTP server on 127.0.0.1 only; nothing here
touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xpmlp.core.errors import DataFileError, DownloadError
from xpmlp.datasets import MNIST_FILES, load_mnist, read_idx, resolve_data_dir
from xpmlp.datasets import mnist as mnist_mod
from xpmlp.datasets.mnist import MnistFile, download_file

MNIST_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist"

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX content (type 0x08) for a uint8 array of any dimension count."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def labels_bytes(values: list[int]) -> bytes:
    return idx_bytes(np.array(values, dtype=np.uint8))


def images_bytes(n: int, rows: int = 2, cols: int = 2, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return idx_bytes(rng.integers(0, 256, (n, rows, cols), dtype=np.uint8))


def spec_for(filename: str, content: bytes) -> MnistFile:
    return MnistFile(filename, hashlib.sha256(content).hexdigest(), len(content))


def assert_names(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# --------------------------------------------------------------------------- local server


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> (status, body, claimed Content-Length or None)."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        status, body, claimed = self.server.routes.get(self.path, (404, b"not found", None))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if claimed is None else claimed))
        self.end_headers()
        self.wfile.write(body)  # with a larger claimed length, the close truncates it

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class LocalServer:
    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def mirror(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}/"

    def serve(
        self,
        mirror: str,
        filename: str,
        body: bytes,
        *,
        status: int = 200,
        claimed: int | None = None,
    ) -> str:
        self.httpd.routes[f"/{mirror}/{filename}"] = (status, body, claimed)
        return self.mirror(mirror)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture()
def tiny() -> tuple[MnistFile, bytes]:
    content = labels_bytes([3, 1, 4, 1, 5, 9, 2, 6])
    return spec_for("tiny-labels-idx1-ubyte.gz", content), content


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- shipped files


def test_shipped_labels_counts_and_first_values() -> None:
    y_train = read_idx(
        MNIST_DIR / "train-labels-idx1-ubyte.gz", expected_sha256=MNIST_FILES["train_labels"].sha256
    )
    y_test = read_idx(
        MNIST_DIR / "t10k-labels-idx1-ubyte.gz", expected_sha256=MNIST_FILES["test_labels"].sha256
    )
    assert y_train.dtype == np.uint8 and y_train.shape == (60000,)
    assert y_test.dtype == np.uint8 and y_test.shape == (10000,)
    assert np.bincount(y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == TEST_COUNTS
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_shipped_images_shape() -> None:
    x = read_idx(
        MNIST_DIR / "t10k-images-idx3-ubyte.gz", expected_sha256=MNIST_FILES["test_images"].sha256
    )
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert x.max() == 255 and x.min() == 0


def test_load_mnist_shipped_is_read_only_and_cached() -> None:
    data = load_mnist(MNIST_DIR, download=False, progress=False)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    for array in data:
        assert array.dtype == np.uint8
        assert not array.flags.writeable
    assert data.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(data.y_test, minlength=10).tolist() == TEST_COUNTS
    with pytest.raises(ValueError):
        data.x_train[0, 0] = 1
    assert load_mnist(MNIST_DIR, download=False, progress=False) is data


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_raw_and_gzip(tmp_path: Path, compress: bool) -> None:
    content = images_bytes(3, 4, 5)
    path = tmp_path / "x.idx"  # the suffix does not decide: the magic bytes do
    path.write_bytes(gzip.compress(content) if compress else content)
    x = read_idx(path, expected_sha256=hashlib.sha256(content).hexdigest())
    assert x.shape == (3, 4, 5) and x.dtype == np.uint8
    assert x.tobytes() == content[16:]
    x[0, 0, 0] = 7  # read_idx's own arrays are writable


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_read_idx_round_trips_any_shape(shape: list[int], seed: int) -> None:
    import tempfile

    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.gz"
        path.write_bytes(gzip.compress(idx_bytes(array)))
        np.testing.assert_array_equal(read_idx(path), array)


def bad_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x00\x08\x07" + b"\x00" * 10, "truncated IDX header"),
        (b"\x00\x00\x0d\x01" + (2).to_bytes(4, "big") + b"\x00" * 8, "0x0d (float32)"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"", "empty"),
        (b"PK\x03\x04 this is a zip, not MNIST", "not an IDX file"),
        (b"\x00\x00", "not an IDX file"),
    ],
)
def test_read_idx_bad_magic_or_header(tmp_path: Path, data: bytes, reason: str) -> None:
    path = bad_file(tmp_path, "bad-idx1-ubyte", data)
    with pytest.raises(DataFileError) as exc:
        read_idx(path)
    assert_names(exc, str(path), reason)


def test_read_idx_garbage_names_both_formats(tmp_path: Path) -> None:
    path = bad_file(tmp_path, "garbage.gz", b"hello world, definitely not IDX")
    with pytest.raises(DataFileError) as exc:
        read_idx(path)
    assert_names(exc, str(path), "not an IDX file", "not gzip-compressed", "68 65 6c 6c")


def test_read_idx_gzip_of_non_idx(tmp_path: Path) -> None:
    path = bad_file(tmp_path, "g.gz", gzip.compress(b"<html>mirror error page</html>"))
    with pytest.raises(DataFileError) as exc:
        read_idx(path)
    assert_names(exc, str(path), "not an IDX file", "decompressed content")


def test_read_idx_truncated_payload(tmp_path: Path) -> None:
    content = images_bytes(60, 28, 28)
    path = bad_file(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(content[:139]))
    with pytest.raises(DataFileError) as exc:
        read_idx(path)
    assert_names(
        exc,
        str(path),
        "truncated payload",
        "header says 60 images of 28x28 = 47040 bytes but 123 bytes follow",
    )


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = bad_file(tmp_path, "labels", labels_bytes([1, 2, 3]) + b"\x00\x01")
    with pytest.raises(DataFileError) as exc:
        read_idx(path)
    assert_names(exc, str(path), "trailing bytes", "3 labels = 3 bytes but 5 bytes follow")


def test_read_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    compressed = gzip.compress(images_bytes(50, 8, 8))
    path = bad_file(tmp_path, "t10k-images-idx3-ubyte.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DataFileError) as exc:
        read_idx(path)
    assert_names(exc, f"{path}: truncated gzip stream")


def test_read_idx_corrupt_gzip_stream(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(labels_bytes(list(range(200)))))
    compressed[-8] ^= 0xFF  # the CRC-32 in the trailer
    path = bad_file(tmp_path, "l.gz", bytes(compressed))
    with pytest.raises(DataFileError) as exc:
        read_idx(path)
    assert_names(exc, str(path), "corrupt gzip stream")


def test_read_idx_sha_mismatch(tmp_path: Path) -> None:
    content = labels_bytes([1, 2, 3])
    path = bad_file(tmp_path, "l.gz", gzip.compress(content))
    expected = "0" * 64
    with pytest.raises(DataFileError) as exc:
        read_idx(path, expected_sha256=expected)
    actual = hashlib.sha256(content).hexdigest()
    assert_names(
        exc, f"{path}: SHA-256 of the decompressed content is {actual}, expected {expected}"
    )


def test_read_idx_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataFileError) as exc:
        read_idx(tmp_path / "nope.gz")
    assert_names(exc, str(tmp_path / "nope.gz"), "no such file")
    with pytest.raises(DataFileError) as exc:
        read_idx(tmp_path)
    assert_names(exc, str(tmp_path), "directory")


# --------------------------------------------------------------------------- download_file


def test_download_good_file_lands_verified(
    server: LocalServer, tmp_path: Path, tiny: tuple[MnistFile, bytes], capsys
) -> None:
    spec, content = tiny
    mirror = server.serve("a", spec.filename, gzip.compress(content))
    dest = tmp_path / "new" / "dir"
    path = download_file(spec, dest, mirrors=(mirror,), timeout=5, progress=True)
    assert path == dest / spec.filename
    assert [p.name for p in dest.iterdir()] == [spec.filename]
    assert read_idx(path, expected_sha256=spec.sha256).tolist() == [3, 1, 4, 1, 5, 9, 2, 6]
    assert capsys.readouterr().out == ""  # progress goes to stderr


def test_download_goes_through_pooch_with_a_labelled_bar(
    server: LocalServer,
    tmp_path: Path,
    tiny: tuple[MnistFile, bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    pooch = pytest.importorskip("pooch")
    spec, content = tiny
    mirror = server.serve("p", spec.filename, gzip.compress(content))
    calls = []
    original = pooch.HTTPDownloader.__call__

    def spy(self, url, output_file, *args, **kwargs):
        calls.append((url, self.kwargs.get("timeout")))
        return original(self, url, output_file, *args, **kwargs)

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", spy)
    download_file(spec, tmp_path, mirrors=(mirror,), timeout=7, progress=True)
    assert calls == [(mirror + spec.filename, 7)]
    assert spec.filename in capsys.readouterr().err  # tqdm's bar, labelled, on stderr


def test_download_accepts_an_uncompressed_mirror(
    server: LocalServer, tmp_path: Path, tiny: tuple[MnistFile, bytes]
) -> None:
    spec, content = tiny
    mirror = server.serve("raw", spec.filename, content)
    path = download_file(spec, tmp_path, mirrors=(mirror,), timeout=5, progress=False)
    assert read_idx(path, expected_sha256=spec.sha256).shape == (8,)


def failure_cases(spec: MnistFile, content: bytes) -> dict[str, tuple[dict, str]]:
    gz = gzip.compress(content)
    return {
        "corrupt": (
            {"body": gzip.compress(labels_bytes([0] * 8))},
            "checksum mismatch: SHA-256 of the decompressed content is",
        ),
        "wrong size": (
            {"body": gzip.compress(content + b"\x00")},
            f"more than {spec.size} bytes, expected {spec.size}",
        ),
        "short body": (
            {"body": gz[:10], "claimed": len(gz)},
            f"truncated download: received 10 of {len(gz)} bytes",
        ),
        "cut gzip": ({"body": gz[:-12]}, "truncated gzip stream"),
        "not gzip": ({"body": b"\x1f\x8b garbage that claims to be gzip"}, "corrupt gzip"),
        "server error": ({"body": b"oops", "status": 500}, "HTTP 500"),
        "not found": ({"body": b"", "status": 404}, "HTTP 404"),
    }


@pytest.mark.parametrize(
    "case",
    ["corrupt", "wrong size", "short body", "cut gzip", "not gzip", "server error", "not found"],
)
def test_download_failure_leaves_nothing(
    server: LocalServer, tmp_path: Path, tiny: tuple[MnistFile, bytes], case: str
) -> None:
    spec, content = tiny
    kwargs, reason = failure_cases(spec, content)[case]
    if kwargs.get("status") == 404:
        mirror = server.mirror("missing")
    else:
        mirror = server.serve(
            "m",
            spec.filename,
            kwargs["body"],
            status=kwargs.get("status", 200),
            claimed=kwargs.get("claimed"),
        )
    with pytest.raises(DownloadError) as exc:
        download_file(spec, tmp_path, mirrors=(mirror,), timeout=5, progress=False)
    assert_names(exc, spec.filename, mirror + spec.filename, reason)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary leftovers


def test_download_connection_refused(tmp_path: Path, tiny: tuple[MnistFile, bytes]) -> None:
    spec, _ = tiny
    mirror = f"http://127.0.0.1:{closed_port()}/mnist"
    with pytest.raises(DownloadError) as exc:
        download_file(spec, tmp_path, mirrors=(mirror,), timeout=5, progress=False)
    assert_names(exc, spec.filename, "connection refused")
    assert list(tmp_path.iterdir()) == []


def test_download_falls_back_to_the_next_mirror(
    server: LocalServer, tmp_path: Path, tiny: tuple[MnistFile, bytes]
) -> None:
    spec, content = tiny
    broken = server.serve("broken", spec.filename, b"", status=500)
    corrupt = server.serve("corrupt", spec.filename, gzip.compress(b"nonsense"))
    good = server.serve("good", spec.filename, gzip.compress(content))
    path = download_file(spec, tmp_path, mirrors=(broken, corrupt, good), timeout=5, progress=False)
    assert read_idx(path, expected_sha256=spec.sha256).shape == (8,)
    assert [p.name for p in tmp_path.iterdir()] == [spec.filename]


def test_download_error_lists_every_mirror(
    server: LocalServer, tmp_path: Path, tiny: tuple[MnistFile, bytes]
) -> None:
    spec, _ = tiny
    broken = server.serve("broken", spec.filename, b"", status=500)
    corrupt = server.serve("corrupt", spec.filename, gzip.compress(b"nonsense"))
    with pytest.raises(DownloadError) as exc:
        download_file(spec, tmp_path, mirrors=(broken, corrupt), timeout=5, progress=False)
    assert_names(
        exc, f"{broken}{spec.filename}: HTTP 500", f"{corrupt}{spec.filename}: checksum mismatch"
    )
    assert isinstance(exc.value, OSError)
    assert list(tmp_path.iterdir()) == []


def test_download_by_key_uses_module_mirrors(
    server: LocalServer,
    tmp_path: Path,
    tiny: tuple[MnistFile, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, content = tiny
    mirror = server.serve("k", spec.filename, gzip.compress(content))
    monkeypatch.setitem(mnist_mod.MNIST_FILES, "test_labels", spec)
    monkeypatch.setattr(mnist_mod, "MIRRORS", (mirror,))
    assert download_file("test_labels", tmp_path, progress=False) == tmp_path / spec.filename
    with pytest.raises(ValueError, match="unknown MNIST file"):
        download_file("cifar", tmp_path, progress=False)


# --------------------------------------------------------------------------- load_mnist


@pytest.fixture()
def tiny_mnist(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """MNIST_FILES and MIRRORS replaced by four tiny files served locally."""
    contents = {
        "train_images": images_bytes(5, 3, 3, seed=1),
        "train_labels": labels_bytes([0, 1, 2, 3, 4]),
        "test_images": images_bytes(2, 3, 3, seed=2),
        "test_labels": labels_bytes([7, 8]),
    }
    for key, content in contents.items():
        spec = spec_for(f"tiny-{key}.gz", content)
        monkeypatch.setitem(mnist_mod.MNIST_FILES, key, spec)
        server.serve("tiny", spec.filename, gzip.compress(content))
    monkeypatch.setattr(mnist_mod, "MIRRORS", (server.mirror("tiny"),))
    return contents


def test_load_mnist_downloads_missing_files(tmp_path: Path, tiny_mnist: dict[str, bytes]) -> None:
    data_dir = tmp_path / "cache"
    data = load_mnist(data_dir, progress=False)
    assert data.x_train.shape == (5, 9) and data.x_test.shape == (2, 9)
    assert data.y_train.tolist() == [0, 1, 2, 3, 4] and data.y_test.tolist() == [7, 8]
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(f"tiny-{k}.gz" for k in tiny_mnist)
    assert load_mnist(data_dir, download=False) is data  # cached in the process


def test_load_mnist_notices_a_changed_file(tmp_path: Path, tiny_mnist: dict[str, bytes]) -> None:
    data_dir = tmp_path / "d"
    load_mnist(data_dir, progress=False)
    path = data_dir / "tiny-test_labels.gz"
    path.write_bytes(gzip.compress(labels_bytes([7, 9])))
    with pytest.raises(DataFileError) as exc:
        load_mnist(data_dir, progress=False)
    assert_names(exc, str(path), "SHA-256", "delete it")
    assert gzip.decompress(path.read_bytes()) == labels_bytes([7, 9])  # not overwritten


def test_load_mnist_count_mismatch(
    tmp_path: Path, tiny_mnist: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    content = labels_bytes([1, 2, 3])
    spec = spec_for("tiny-test_labels-3.gz", content)
    monkeypatch.setitem(mnist_mod.MNIST_FILES, "test_labels", spec)
    (tmp_path / spec.filename).write_bytes(gzip.compress(content))
    with pytest.raises(DataFileError) as exc:
        load_mnist(tmp_path, progress=False)
    assert_names(exc, "2 images", "3 labels", spec.filename)


def copy_shipped(dest: Path, skip: str | None = None) -> None:
    for spec in MNIST_FILES.values():
        if spec.filename != skip:
            shutil.copy(MNIST_DIR / spec.filename, dest / spec.filename)


def test_load_mnist_missing_file_without_download(tmp_path: Path) -> None:
    copy_shipped(tmp_path, skip="t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataFileError) as exc:
        load_mnist(tmp_path, download=False)
    assert_names(
        exc, "t10k-images-idx3-ubyte.gz", str(tmp_path), "--data-dir", "XPMLP_DATA_DIR", "download"
    )
    assert "train-images" not in str(exc.value)


def test_load_mnist_corrupt_file_is_reported_not_replaced(tmp_path: Path) -> None:
    copy_shipped(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    with pytest.raises(DataFileError) as exc:
        load_mnist(tmp_path, download=True, progress=False)
    assert_names(exc, str(path), "truncated gzip stream", "delete it")
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert path.read_bytes() == good[: len(good) // 3]


# --------------------------------------------------------------------------- resolve_data_dir


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for spec in MNIST_FILES.values():
        (repo / spec.filename).write_bytes(b"")
    monkeypatch.setattr(mnist_mod, "_REPO_DATA_DIR", repo)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XPMLP_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("XPMLP_DATA_DIR")
    assert resolve_data_dir() == repo
    (repo / MNIST_FILES["test_labels"].filename).unlink()  # an incomplete repo copy
    assert resolve_data_dir() == tmp_path / "xdg" / "xpmlp" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "xpmlp" / "mnist"


def test_repo_data_dir_is_found_from_the_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path(mnist_mod.__file__).resolve().is_relative_to(MNIST_DIR.parents[1]):
        pytest.skip("xpmlp is imported from an installed copy, not this source tree")
    monkeypatch.delenv("XPMLP_DATA_DIR", raising=False)
    assert mnist_mod._REPO_DATA_DIR == MNIST_DIR
    assert resolve_data_dir() == MNIST_DIR
