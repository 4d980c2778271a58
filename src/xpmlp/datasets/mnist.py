"""MNIST: locating, downloading, verifying and loading the four IDX files.

The files ship with the repository in ``data/mnist``. :func:`load_mnist` looks for
them in the folder :func:`resolve_data_dir` picks, downloads any that are missing
(when allowed) with :func:`download_file`, checks every file against the SHA-256 of
its published decompressed content, and caches the decoded arrays in the process.

Downloads never leave a partial or unverified file behind: each goes to a temporary
file in the destination folder, is decompressed and hashed (:func:`_verify`), and only
then renamed into place; the generic mirror-by-mirror download (pooch's HTTP
downloader) lives in :mod:`xpmlp.datasets.download`. A corrupt file the user already
has is reported, never overwritten. Environment variables are read through :mod:`xpmlp.core.config`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core import config
from ..core.errors import DataFileError
from .download import MirrorFailure, _reason, download_verified
from .idx import GZIP_MAGIC, read_idx

__all__ = [
    "DATA_DIR_ENV",
    "MIRRORS",
    "MNIST_FILES",
    "MnistData",
    "MnistFile",
    "download_file",
    "load_mnist",
    "resolve_data_dir",
]

#: The variable naming the data folder (kept here for compatibility; see xpmlp.core.config).
DATA_DIR_ENV = config.DATA_DIR
_CHUNK = 1 << 16


@dataclass(frozen=True)
class MnistFile:
    """One published MNIST file: its name and the identity of its decompressed content.

    The ``.gz`` wrappers differ between mirrors (timestamps, compression level), so the
    SHA-256 and the size are those of the decompressed content, not of the download.
    """

    filename: str
    sha256: str
    size: int


MNIST_FILES: dict[str, MnistFile] = {
    "train_images": MnistFile(
        "train-images-idx3-ubyte.gz",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
    ),
    "train_labels": MnistFile(
        "train-labels-idx1-ubyte.gz",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
    ),
    "test_images": MnistFile(
        "t10k-images-idx3-ubyte.gz",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
    ),
    "test_labels": MnistFile(
        "t10k-labels-idx1-ubyte.gz",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
    ),
}

#: Public mirrors, tried in order; a file's URL is the base followed by its filename.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: ``data/mnist`` of a source checkout (``src/xpmlp/datasets/mnist.py`` is 3 levels down).
_REPO_DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "mnist"


class MnistData(NamedTuple):
    """MNIST as read-only uint8 arrays: images flattened to 784 pixels, labels 0-9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# --------------------------------------------------------------------------- locating


def _user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/xpmlp/mnist``, or ``~/.cache/xpmlp/mnist``."""
    return config.user_cache_dir("mnist")


def _has_all_files(directory: Path) -> bool:
    """Whether ``directory`` holds a file for every entry of ``MNIST_FILES``."""
    return all((directory / f.filename).is_file() for f in MNIST_FILES.values())


def _resolve(data_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The data folder and, in words, why it was chosen."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument (--data-dir)"
    env = config.data_dir() or ""
    if env:
        return Path(env).expanduser(), f"the {DATA_DIR_ENV} environment variable"
    if _has_all_files(_REPO_DATA_DIR):
        return _REPO_DATA_DIR, "the repository's data/mnist"
    return _user_cache_dir(), "the user cache (no data_dir, no XPMLP_DATA_DIR, no repository copy)"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder MNIST is read from (and downloaded into).

    Precedence: ``data_dir``; then ``$XPMLP_DATA_DIR``; then the repository's
    ``data/mnist`` when it holds all four files; else ``$XDG_CACHE_HOME/xpmlp/mnist``
    (``~/.cache/xpmlp/mnist`` by default). The folder need not exist yet.
    """
    return _resolve(data_dir)[0]


# --------------------------------------------------------------------------- downloading


def _lookup(name_or_file: str | MnistFile) -> MnistFile:
    """An MnistFile from itself, a key of MNIST_FILES, or a filename."""
    if isinstance(name_or_file, MnistFile):
        return name_or_file
    if name_or_file in MNIST_FILES:
        return MNIST_FILES[name_or_file]
    for spec in MNIST_FILES.values():
        if spec.filename == name_or_file:
            return spec
    known = ", ".join(list(MNIST_FILES) + [f.filename for f in MNIST_FILES.values()])
    raise ValueError(f"unknown MNIST file {name_or_file!r}; expected one of: {known}")


def _mirror_url(base: str, filename: str) -> str:
    """``base`` + ``filename``, with exactly one slash between them."""
    return base.rstrip("/") + "/" + filename


def _verify(path: Path, spec: MnistFile) -> None:
    """Decompress ``path`` (if gzip) and check the size and SHA-256 against ``spec``.

    The verify hook of :func:`download_file`: returns None when the decompressed content
    is exactly ``spec``'s, else raises MirrorFailure with the reason (truncated or corrupt
    gzip stream, unreadable file, wrong size, wrong SHA-256). Reading stops once more than
    ``spec.size`` bytes have been decompressed, so an oversized download is rejected cheaply.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            while size <= spec.size and (chunk := f.read(_CHUNK)):
                digest.update(chunk)
                size += len(chunk)
    except EOFError:
        raise MirrorFailure("truncated gzip stream") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise MirrorFailure(f"corrupt gzip stream ({exc})") from None
    except OSError as exc:
        raise MirrorFailure(f"cannot read the downloaded file ({_reason(exc)})") from None
    if size != spec.size:
        actual = f"more than {spec.size}" if size > spec.size else str(size)
        raise MirrorFailure(
            f"checksum mismatch: decompressed content is {actual} bytes, expected {spec.size}"
        )
    if digest.hexdigest() != spec.sha256:
        raise MirrorFailure(
            f"checksum mismatch: SHA-256 of the decompressed content is "
            f"{digest.hexdigest()}, expected {spec.sha256}"
        )


def download_file(
    name_or_file: str | MnistFile,
    dest_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30,
    progress: bool = True,
) -> Path:
    """Download one MNIST file into ``dest_dir``, verified, and return its path.

    ``name_or_file`` is a key of :data:`MNIST_FILES` ("train_images"), a filename, or an
    :class:`MnistFile`. Each base URL of ``mirrors`` (default: :data:`MIRRORS` as it is
    when called) is tried in turn; a download counts only when its decompressed size
    and SHA-256 match. It is streamed to a temporary file in ``dest_dir`` and renamed
    into place atomically, so ``dest_dir`` never holds a partial or corrupt file.

    Raises:
        DownloadError: no mirror delivered a verified file (the message gives each
            mirror's reason), or ``dest_dir`` cannot be created or written.
        ValueError: ``name_or_file`` names no MNIST file.
    """
    spec = _lookup(name_or_file)
    target = Path(dest_dir) / spec.filename
    bases = MIRRORS if mirrors is None else mirrors
    urls = [_mirror_url(base, spec.filename) for base in bases]
    return download_verified(
        urls,
        target,
        lambda tmp: _verify(tmp, spec),
        desc=spec.filename,
        timeout=timeout,
        progress=progress,
    )


# --------------------------------------------------------------------------- loading


def _missing_error(directory: Path, why: str, missing: list[MnistFile]) -> DataFileError:
    """The error for files absent from ``directory`` when downloading is off."""
    names = ", ".join(f.filename for f in missing)
    return DataFileError(
        f"MNIST file(s) missing: {names}. Looked in {directory} (chosen from {why}) and "
        f"downloading is disabled. To fix: pass --data-dir / data_dir= a folder holding the "
        f"four files, set {DATA_DIR_ENV} to one, or allow downloading (drop --no-download, "
        f"download=True)."
    )


def _stamps(directory: Path, files: tuple[MnistFile, ...]) -> tuple[tuple[int, int], ...]:
    """(mtime_ns, size) of each file: the in-process cache key beside the folder."""
    stamps = []
    for spec in files:
        try:
            st = (directory / spec.filename).stat()
        except OSError as exc:
            raise DataFileError(
                f"{directory / spec.filename}: cannot read the file ({_reason(exc)})"
            ) from None
        stamps.append((st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def _read_pair(directory: Path, images: MnistFile, labels: MnistFile) -> tuple[np.ndarray, ...]:
    """Verified images (flattened, read-only) and labels (read-only) of one split."""
    x = read_idx(directory / images.filename, expected_sha256=images.sha256)
    y = read_idx(directory / labels.filename, expected_sha256=labels.sha256)
    if x.ndim != 3:
        raise DataFileError(
            f"{directory / images.filename}: expected 3-D images "
            f"(count, rows, cols), got shape {x.shape}"
        )
    if y.ndim != 1:
        raise DataFileError(
            f"{directory / labels.filename}: expected 1-D labels, got shape {y.shape}"
        )
    if len(x) != len(y):
        raise DataFileError(
            f"{directory}: {images.filename} holds {len(x)} images but "
            f"{labels.filename} holds {len(y)} labels"
        )
    x = x.reshape(len(x), -1)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@functools.lru_cache(maxsize=2)
def _load_verified(
    directory: str, stamps: tuple[tuple[int, int], ...], files: tuple[MnistFile, ...]
) -> MnistData:
    """Read and verify all four files; cached per folder, file stamps and file specs."""
    del stamps  # part of the cache key only: a changed file is read again
    folder = Path(directory)
    train_images, train_labels, test_images, test_labels = files
    x_train, y_train = _read_pair(folder, train_images, train_labels)
    x_test, y_test = _read_pair(folder, test_images, test_labels)
    return MnistData(x_train, y_train, x_test, y_test)


def _ordered_files() -> tuple[MnistFile, ...]:
    """The four specs of MNIST_FILES in (train images, train labels, test images, labels)."""
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    return tuple(MNIST_FILES[k] for k in keys)


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None, *, download: bool = True, progress: bool = True
) -> MnistData:
    """MNIST as uint8 arrays: x_train (60000, 784), y_train (60000,), x_test, y_test.

    The folder comes from :func:`resolve_data_dir`. Missing files are downloaded into it
    when ``download`` is true; every file is checked against the SHA-256 of its published
    decompressed content. The arrays are read-only and cached in the process (keyed by
    the folder and the files' modification times and sizes).

    Raises:
        DataFileError: a file is missing and ``download`` is false, or a file in the
            folder is corrupt (it is reported, never overwritten).
        DownloadError: a missing file could not be downloaded from any mirror.
    """
    directory, why = _resolve(data_dir)
    files = _ordered_files()
    missing = [f for f in files if not (directory / f.filename).exists()]
    if missing and not download:
        raise _missing_error(directory, why, missing)
    if missing and progress:
        print(f"downloading {len(missing)} MNIST file(s) into {directory}", file=sys.stderr)
    for spec in missing:
        download_file(spec, directory, progress=progress)
    try:
        return _load_verified(str(directory.resolve()), _stamps(directory, files), files)
    except DataFileError as exc:
        raise DataFileError(
            f"{exc}. The file is not the published MNIST file: delete it to "
            f"have it downloaded again, or replace it with a good "
            f"copy"
        ) from None
