"""Verified downloads: try each mirror in turn, keep a file only once it checks out.

:func:`download_verified` streams a URL to a temporary file beside the target (with a
progress bar on stderr), hands the closed file to a verify hook, and only then renames it
into place (through :func:`xpmlp._atomic.atomic_write`). A mirror that fails, at any
step, is recorded with a short reason and the next one is tried; when none delivers, the
:class:`~xpmlp.errors.DownloadError` lists every mirror with its reason. Nothing here
knows about any particular data set.
"""

from __future__ import annotations

import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .._atomic import atomic_write
from ..errors import DownloadError

__all__ = ["MirrorFailure", "download_verified"]

_CHUNK = 1 << 16


class MirrorFailure(Exception):
    """Why one mirror did not deliver a verified file (collected into DownloadError).

    A verify hook given to :func:`download_verified` raises it to reject a download; its
    message becomes that mirror's reason.
    """


class _NullBar:
    """Stands in for a tqdm bar when progress is off or tqdm is unavailable."""

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        """Ignore progress."""


def _progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    """A tqdm byte counter on stderr, or a no-op bar."""
    if not enabled:
        return _NullBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NullBar()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False)


def _reason(exc: BaseException) -> str:
    """A short reason for a failed request: 'connection refused', 'timed out', ..."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        return _reason(inner) if isinstance(inner, BaseException) else str(inner)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"truncated download: received {len(exc.partial)} bytes, {exc.expected} missing"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _content_length(response: Any) -> int | None:
    """The Content-Length of ``response`` as an int, or None when absent or invalid."""
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream(url: str, out: IO[bytes], desc: str, *, timeout: float, progress: bool) -> None:
    """Write the body at ``url`` to ``out``; raise MirrorFailure on any problem."""
    request = urllib.request.Request(url, headers={"User-Agent": "xpmlp"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_length(response)
            received = 0
            with _progress_bar(total, desc, progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        exc.close()
        raise MirrorFailure(_reason(exc)) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise MirrorFailure(_reason(exc)) from None
    if total is not None and received < total:
        raise MirrorFailure(f"truncated download: received {received} of {total} bytes")


def _fetch_verified(url: str, target: Path, verify: Callable[[Path], None], *, desc: str,
                    timeout: float, progress: bool) -> None:
    """Download ``url`` to a temp file beside ``target``, verify it, rename it into place.

    Whatever happens, no temporary file remains; ``target`` appears only when verified.
    """
    try:
        with atomic_write(target, "wb", verify=verify) as out:
            _stream(url, out, desc, timeout=timeout, progress=progress)
    except OSError as exc:  # e.g. the folder is not writable, or the rename failed
        raise MirrorFailure(f"cannot store the file ({_reason(exc)})") from None


def download_verified(urls: Sequence[str], target: Path, verify: Callable[[Path], None], *,
                      desc: str | None = None, timeout: float = 30,
                      progress: bool = True) -> Path:
    """Download the first of ``urls`` that delivers a verified file to ``target``; return it.

    The URLs are tried in order. Each body is streamed (``timeout`` seconds per network
    operation, a byte counter labelled ``desc``, default ``target.name``, on stderr when
    ``progress`` is true and tqdm is installed) to a temporary file in ``target``'s folder,
    which is created if need be. ``verify(temporary_path)`` then runs on the closed file
    and rejects it by raising :class:`MirrorFailure` (its message is the mirror's reason);
    only a file it accepts is renamed onto ``target``, atomically. So ``target`` never
    holds a partial or rejected file, and no temporary file is left behind. An existing
    ``target`` is replaced only by a verified download.

    Raises:
        DownloadError: ``urls`` is empty, ``target``'s folder cannot be created, or no URL
            delivered a verified file (the message gives each URL with its reason: an HTTP
            status, "connection refused", "timed out", a truncated body, the verify hook's
            message, or that the file could not be stored).
    """
    target = Path(target)
    urls = tuple(urls)
    label = target.name if desc is None else desc
    if not urls:
        raise DownloadError(f"cannot download {target.name}: no mirrors given")
    dest = target.parent
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot download {target.name}: cannot create {dest} "
                            f"({_reason(exc)})") from None
    failures = []
    for url in urls:
        try:
            _fetch_verified(url, target, verify, desc=label, timeout=timeout, progress=progress)
        except MirrorFailure as exc:
            failures.append(f"{url}: {exc}")
            continue
        return target
    raise DownloadError(f"could not download {target.name} into {dest} from any mirror:\n  "
                        + "\n  ".join(failures))
