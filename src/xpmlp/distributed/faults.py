"""Faults in a job of several processes: no rank may leave the others waiting.

- ``install_abort_hook(comm)`` (called by ``xpmlp.distributed.init`` when the world has
  more than one rank): an uncaught exception on any rank prints its traceback headed by
  the rank, then ``comm.abort(1)`` (MPI_Abort) ends every process of the job. Without it
  the other ranks would wait forever in their next collective.
- ``abort_job(comm, message, code)``: the same for errors a program catches itself (the
  ``xpmlp`` command prints its errors and returns a status instead of raising).
- ``check_same_settings(comm, settings, what)``: every rank compares a digest of its
  settings against rank 0's; on any difference every rank raises the same
  ``DistributedError``, naming each differing setting with both values.

An error every rank raises alike (a settings mismatch, an agreed divergence) is marked
*agreed*: rank 0 reports it and aborts, the other ranks stay quiet for a grace period
(rank 0's abort normally ends them first), so the message appears once.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, NoReturn, TypeVar

from ..core.errors import DistributedError
from .base import Communicator, flush_standard_streams

if TYPE_CHECKING:
    from types import TracebackType

#: a rank's settings by name (JSON-able, or shown by repr)
Settings = Mapping[str, object]

AGREED_GRACE_S = 3.0  # how long ranks other than 0 wait for rank 0 to abort an agreed error
#: how long a rank waits between writing its message and aborting: the launcher forwards a
#: rank's stderr through a pipe, and MPI_Abort ends the forwarding with the job, so a message
#: not forwarded yet would be lost (seen under load: an empty stderr and exit status 2)
FORWARD_GRACE_S = 0.5
MAX_LISTED = 8  # differing settings named in a mismatch message

_E = TypeVar("_E", bound=BaseException)
_hooked: list[Communicator] = []  # the communicator whose abort the installed hook calls


def mark_agreed(exc: _E) -> _E:
    """Mark ``exc`` as raised alike on every rank (see the module docstring); returns it."""
    exc._xpmlp_agreed = True  # type: ignore[attr-defined]
    return exc


def is_agreed(exc: BaseException | None) -> bool:
    return bool(getattr(exc, "_xpmlp_agreed", False))


def abort_job(comm: Communicator, message: str, code: int = 1, *, agreed: bool = False) -> NoReturn:
    """Write ``message`` to stderr, headed by the rank, then end every rank with ``code``.

    With ``agreed`` (every rank has the same message), ranks other than 0 first wait
    ``AGREED_GRACE_S`` seconds for rank 0 to print it and abort the job.
    """
    if agreed and comm.rank != 0:
        time.sleep(AGREED_GRACE_S)
    header = f"xpmlp: rank {comm.rank} of {comm.world_size}"
    sys.stderr.write(
        f"{header}: {message.rstrip()}\n{header}: aborting every rank of the job "
        f"(exit status {code})\n"
    )
    flush_standard_streams()
    time.sleep(FORWARD_GRACE_S)
    comm.abort(code)


def install_abort_hook(comm: Communicator) -> None:
    """Make an uncaught exception on this rank abort the whole job (``sys.excepthook``).

    Idempotent: a second call only changes which communicator aborts.
    """
    _hooked[:] = [comm]
    if getattr(sys.excepthook, "_xpmlp_abort_hook", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        abort_job(_hooked[0], f"uncaught exception\n{text}", 1, agreed=is_agreed(exc))

    hook._xpmlp_abort_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def settings_digest(settings: Mapping[str, object]) -> str:
    """SHA-256 of the settings as canonical JSON (sorted keys; other objects by repr)."""
    text = json.dumps(settings, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_settings(comm: Communicator, settings: Settings, what: str) -> list[Settings]:
    """Every rank's ``settings``, in rank order, once each rank's digest equals rank 0's.

    A collective: every rank calls it. Otherwise every rank raises the same (agreed)
    ``DistributedError`` naming, for each rank that differs, each setting with its value
    there and on rank 0.
    """
    gathered = comm.allgather_object((settings_digest(settings), settings))
    ref_digest, ref = gathered[0]
    differences = []
    for rank, (digest, theirs) in enumerate(gathered[1:], start=1):
        if digest == ref_digest:
            continue
        for key in sorted(set(ref) | set(theirs)):
            if theirs.get(key) != ref.get(key):
                differences.append(
                    f"{key} is {theirs.get(key)!r} on rank {rank} but {ref.get(key)!r} on rank 0"
                )
    if differences:
        listed = "; ".join(differences[:MAX_LISTED])
        more = (
            f" (and {len(differences) - MAX_LISTED} more)" if len(differences) > MAX_LISTED else ""
        )
        raise mark_agreed(
            DistributedError(
                f"the ranks started {what} with different settings: {listed}{more}. "
                "Every rank must build the same model and pass the same options, with data "
                "of the same shape (its own rows)"
            )
        )
    return [s for _, s in gathered]
