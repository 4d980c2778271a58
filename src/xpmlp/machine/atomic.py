"""Writing files atomically: a temporary file beside the target, then a rename.

The temporary file is ``.NAME.<pid>.<random>.tmp`` (NAME the target's name, pid the
writer's process id). A writer killed outright (SIGKILL, power loss) cannot delete its
temporary file, so each ``atomic_write`` first deletes the temporaries of the same target
whose writer process no longer exists (POSIX only). Process ids are those of this machine:
in a directory shared with other hosts or PID namespaces, a live writer elsewhere may look
dead; its save then fails at the rename (the target keeps its old content) and can be rerun.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, overload

if TYPE_CHECKING:
    # what contextmanager makes of a generator function (typeshed's name for it)
    from contextlib import _GeneratorContextManager


@overload
def atomic_write(
    path: str | os.PathLike[str],
    mode: Literal["w"] = "w",
    verify: Callable[[Path], None] | None = None,
) -> _GeneratorContextManager[IO[str]]: ...
@overload
def atomic_write(
    path: str | os.PathLike[str],
    mode: Literal["wb"],
    verify: Callable[[Path], None] | None = None,
) -> _GeneratorContextManager[IO[bytes]]: ...
@contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    verify: Callable[[Path], None] | None = None,
) -> Iterator[IO[str] | IO[bytes]]:  # IO[str] for mode "w", IO[bytes] for "wb" (os.fdopen's)
    """Open a temporary file beside ``path``; on success rename it to ``path``, else delete it.

    ``verify(temporary_path)``, if given, runs on the closed file before the
    rename and rejects it by raising. Readers never see half a file or a
    rejected one, and a failure leaves no file behind. The file gets the mode a
    newly created file gets (``0o666 & ~umask``). Stale temporaries of ``path`` left by
    dead writers are deleted first (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp made it 0o600
        if verify is not None:
            verify(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_pattern(path: Path) -> re.Pattern[str]:
    """Matches the names of ``path``'s temporaries only; group 1 is the writer's pid.

    The random part has no dot, so the temporaries of ``a`` and of ``a.1`` never match
    each other's pattern.
    """
    return re.compile(rf"\.{re.escape(path.name)}\.([0-9]+)\.[^.]+\.tmp\Z")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporaries of ``path`` whose writer process is gone; return them.

    Temporaries of live processes (this one included), of other targets and any file not
    named like a temporary are left alone, and so is everything off POSIX (where
    ``os.kill(pid, 0)`` would not be a harmless probe). Failures to list or delete are
    ignored: cleaning up never stops a save.
    """
    if os.name != "posix":
        return []
    pattern = temporary_pattern(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _process_exists(int(match.group(1))):
            continue
        try:
            os.unlink(entry.path)
        except OSError:  # gone already (another writer cleaned it) or not ours to delete
            continue
        removed.append(Path(entry.path))
    return removed


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` may exist: False only when ``os.kill(pid, 0)`` says it does not.

    Zombies (dead, not yet reaped) count as existing; so do pids we may not signal and
    values that are no pid at all (0, or too large), which are left alone.
    """
    if pid <= 0:  # 0 would probe our own process group
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows
    (``/proc/self/status``); elsewhere set and restored. A file another thread creates in
    that instant gets the most restrictive umask, 0o077, never a more open one."""
    umask = _umask_from_proc()
    if umask is None:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def _umask_from_proc() -> int | None:
    """The ``Umask:`` line of ``/proc/self/status`` (Linux >= 4.7), or None without it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None
