"""Reading IDX files (the MNIST format), gzip-compressed or raw, with strict checks.

An IDX file is a big-endian header followed by the data: two zero bytes, a type code
(only ``0x08``, unsigned byte, is supported), the number of dimensions, one 32-bit size
per dimension, then exactly ``prod(sizes)`` bytes. MNIST's label files have the magic
number 2049 (``00 00 08 01``, one dimension) and its image files 2051 (``00 00 08 03``,
count x rows x cols).

Every failure raises :class:`~xpmlp.core.errors.DataFileError` with the file path and the
reason in its message; no gzip, zlib, struct or NumPy exception escapes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..core.errors import DataFileError

__all__ = ["GZIP_MAGIC", "LABELS_MAGIC", "IMAGES_MAGIC", "UBYTE_TYPE", "read_idx"]

GZIP_MAGIC = b"\x1f\x8b"
LABELS_MAGIC = 2049
IMAGES_MAGIC = 2051
UBYTE_TYPE = 0x08

_TYPE_NAMES = {0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def _fail(path: Path, reason: str) -> DataFileError:
    """The error for ``path``: the path, a colon, then the reason."""
    return DataFileError(f"{path}: {reason}")


def _read_bytes(path: Path) -> bytes:
    """The raw bytes of ``path``; a missing or unreadable file is a DataFileError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not an IDX file") from None
    except OSError as exc:
        raise _fail(path, f"cannot read the file ({exc.strerror or exc})") from None


def _gunzip(path: Path, data: bytes) -> bytes:
    """Decompress a whole gzip stream, naming truncation and corruption plainly."""
    try:
        return gzip.decompress(data)
    except EOFError:
        raise _fail(path, "truncated gzip stream (the compressed file ends early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise _fail(path, f"corrupt gzip stream ({exc})") from None


def _parse_header(path: Path, data: bytes, *, compressed: bool) -> tuple[tuple[int, ...], int]:
    """The dimensions and the header length of IDX content, after checking the magic."""
    where = "the decompressed content" if compressed else "the file"
    if not data:
        raise _fail(path, f"{where} is empty (0 bytes), not IDX")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        gzip_note = "" if compressed else " and it is not gzip-compressed (no 1f 8b magic)"
        raise _fail(
            path,
            f"not an IDX file: {where} starts with bytes {data[:4].hex(' ')} "
            f"(expected 00 00 08 01 for labels or 00 00 08 03 for images)"
            f"{gzip_note}",
        )
    type_code, ndim = data[2], data[3]
    if type_code != UBYTE_TYPE:
        kind = _TYPE_NAMES.get(type_code, "unknown")
        raise _fail(
            path,
            f"IDX data type 0x{type_code:02x} ({kind}) is not supported; "
            f"only 0x08 (unsigned byte) is",
        )
    if ndim == 0:
        raise _fail(path, "IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise _fail(
            path,
            f"truncated IDX header: {ndim} dimension(s) need {header_len} "
            f"header bytes but the content is {len(data)} bytes",
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return dims, header_len


def _describe(magic: int, dims: tuple[int, ...]) -> str:
    """What the header promises, in words: '60000 images of 28x28' or '60000 labels'."""
    if magic == IMAGES_MAGIC:
        return f"{dims[0]} images of {dims[1]}x{dims[2]}"
    if magic == LABELS_MAGIC:
        return f"{dims[0]} labels"
    return "dimensions " + "x".join(str(d) for d in dims)


def _check_payload(path: Path, data: bytes, dims: tuple[int, ...], header_len: int) -> None:
    """Require exactly ``prod(dims)`` bytes after the header: no fewer, no more."""
    expected = math.prod(dims)
    actual = len(data) - header_len
    if actual != expected:
        magic = int.from_bytes(data[:4], "big")
        what = "truncated payload" if actual < expected else "trailing bytes after the payload"
        raise _fail(
            path,
            f"{what}: header says {_describe(magic, dims)} = {expected} bytes "
            f"but {actual} bytes follow",
        )


def _check_sha256(path: Path, data: bytes, expected_sha256: str) -> None:
    """Compare the SHA-256 of the decompressed content with the expected hex digest."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise _fail(
            path,
            f"SHA-256 of the decompressed content is {actual}, expected {expected_sha256.lower()}",
        )


def read_idx(path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzip-compressed or raw, into a uint8 array.

    Compression is detected from the content (the ``1f 8b`` gzip magic), not the suffix.
    The header must have the unsigned-byte type code and the payload must have exactly
    the length the header gives. ``expected_sha256`` (hex) is compared with the SHA-256
    of the decompressed content. Images (magic 2051) come back as ``(n, rows, cols)``,
    labels (magic 2049) as ``(n,)``; other dimension counts keep their shape.

    Raises:
        DataFileError: the file is missing, unreadable, not gzip nor IDX, truncated,
            has trailing bytes or fails the checksum; the message names the file and why.
    """
    path = Path(path)
    data = _read_bytes(path)
    compressed = data.startswith(GZIP_MAGIC)
    if compressed:
        data = _gunzip(path, data)
    dims, header_len = _parse_header(path, data, compressed=compressed)
    _check_payload(path, data, dims, header_len)
    if expected_sha256 is not None:
        _check_sha256(path, data, expected_sha256)
    flat = np.frombuffer(data, dtype=np.uint8, offset=header_len)
    return flat.reshape(dims).copy()  # a writable array that owns its memory
