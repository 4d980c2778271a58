"""Verified downloads: try each mirror in turn, keep a file only once it checks out.

:func:`download_verified` has pooch's HTTP downloader (:class:`pooch.HTTPDownloader`, on
``requests``, with a tqdm progress bar on stderr) stream a URL into a temporary file beside
the target, hands the closed file to a verify hook (the hash check), and only then renames
it into place (through :func:`xpmlp.machine.atomic.atomic_write`). A mirror that fails, at any
step, is recorded with a short reason and the next one is tried; when none delivers, the
:class:`~xpmlp.core.errors.DownloadError` lists every mirror with its reason. Nothing here
knows about any particular data set.
"""

from __future__ import annotations

import http.client
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol

import pooch

from ..core.errors import DownloadError
from ..machine.atomic import atomic_write

__all__ = ["MirrorFailure", "download_verified"]


class MirrorFailure(Exception):
    """Why one mirror did not deliver a verified file (collected into DownloadError).

    A verify hook given to :func:`download_verified` raises it to reject a download; its
    message becomes that mirror's reason.
    """


class _ProgressBar(Protocol):
    """What this module uses of a tqdm bar (pooch drives the rest)."""

    def close(self) -> object: ...


def _progress_bar(desc: str, enabled: bool) -> _ProgressBar | Literal[False]:
    """A tqdm byte counter on stderr for pooch to drive, or False (no bar)."""
    if not enabled:
        return False
    try:
        from tqdm import tqdm
    except ImportError:
        return False
    bar: _ProgressBar = tqdm(
        total=0,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
    )
    return bar


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps: arguments, ``reason``, cause and context."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        stack.extend(e for e in inner if isinstance(e, BaseException))


def _truncation(exc: BaseException) -> str | None:
    """ "truncated download: received R of T bytes" when ``exc`` wraps an incomplete read."""
    for inner in _causes(exc):
        if isinstance(inner, http.client.IncompleteRead):
            partial = inner.partial
            received = partial if isinstance(partial, int) else len(partial)
            expected = inner.expected
            if expected is None:
                return f"truncated download: received {received} bytes"
            # urllib3 (under requests) gives what is still missing; http.client too
            return f"truncated download: received {received} of {received + expected} bytes"
    return None


def _reason(exc: BaseException) -> str:
    """A short reason for a failed request: 'HTTP 404 Not Found', 'connection refused', ..."""
    import requests  # pooch's own dependency; imported on first use, as pooch does

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}".rstrip()
    truncated = _truncation(exc)
    if truncated is not None:
        return truncated
    causes = list(_causes(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in causes) or (
        "Connection refused" in str(exc)
    ):
        return "connection refused"
    if isinstance(exc, requests.Timeout) or any(isinstance(e, TimeoutError) for e in causes):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fetch_verified(
    url: str,
    target: Path,
    verify: Callable[[Path], None],
    *,
    desc: str,
    timeout: float,
    progress: bool,
) -> None:
    """Download ``url`` to a temp file beside ``target``, verify it, rename it into place.

    Whatever happens, no temporary file remains; ``target`` appears only when verified.
    """
    import requests

    bar = _progress_bar(desc, progress)
    downloader = pooch.HTTPDownloader(
        progressbar=bar, timeout=timeout, headers={"User-Agent": "xpmlp"}
    )
    try:
        with atomic_write(target, "wb", verify=verify) as out:
            try:
                downloader(url, out, None)
            except requests.RequestException as exc:
                raise MirrorFailure(_reason(exc)) from None
    except OSError as exc:  # e.g. the folder is not writable, or the rename failed
        raise MirrorFailure(f"cannot store the file ({_reason(exc)})") from None
    finally:
        if bar:
            bar.close()


def download_verified(
    urls: Sequence[str],
    target: Path,
    verify: Callable[[Path], None],
    *,
    desc: str | None = None,
    timeout: float = 30,
    progress: bool = True,
) -> Path:
    """Download the first of ``urls`` that delivers a verified file to ``target``; return it.

    The URLs are tried in order. Each body is streamed by :class:`pooch.HTTPDownloader`
    (``timeout`` seconds per network operation, a byte counter labelled ``desc``, default
    ``target.name``, on stderr when ``progress`` is true and tqdm is installed) to a
    temporary file in ``target``'s folder, which is created if need be.
    ``verify(temporary_path)`` then runs on the closed file and rejects it by raising
    :class:`MirrorFailure` (its message is the mirror's reason); only a file it accepts is
    renamed onto ``target``, atomically. So ``target`` never holds a partial or rejected
    file, and no temporary file is left behind. An existing ``target`` is replaced only by
    a verified download.

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
        raise DownloadError(
            f"cannot download {target.name}: cannot create {dest} ({_reason(exc)})"
        ) from None
    failures = []
    for url in urls:
        try:
            _fetch_verified(url, target, verify, desc=label, timeout=timeout, progress=progress)
        except MirrorFailure as exc:
            failures.append(f"{url}: {exc}")
            continue
        return target
    raise DownloadError(
        f"could not download {target.name} into {dest} from any mirror:\n  " + "\n  ".join(failures)
    )
