"""A registry: the one list of the activations, the losses or the optimizers.

Each family keeps its entries in one ``Registry``; every other list of names
(validation, the CLI's choices, ``xpmlp explain``, the README's tables, the
tests' parameters) is derived from it, and an unknown name raises
``ParameterError`` saying what was received and what exists.

Entries are added with ``register``, by the package for its own entries (then
``freeze_builtins``) and in the same way by users (``xpmlp.register_activation``,
``xpmlp.register_optimizer``): a user's entry works everywhere a built-in one does. A
built-in entry is never replaced or removed; a user's may be, with ``replace=True``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from .errors import ParameterError

Entry = TypeVar("Entry")

#: what a registered name looks like (it appears in files, the CLI and kernel names).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class Registry(Mapping[str, Entry], Generic[Entry]):
    """Entries of one family by name (each entry has a ``name``), in definition order."""

    def __init__(self, family: str, entries: Iterable[Entry] = ()) -> None:
        self.family = family
        self._entries: dict[str, Entry] = {}
        self.builtins: frozenset[str] = frozenset()  # the package's own names
        for entry in entries:
            self.register(entry)

    def register(self, entry: Entry, replace: bool = False) -> Entry:
        """Add ``entry`` under its ``name``; ``ParameterError`` if the name is not an
        identifier, is built in, or is taken and ``replace`` is False."""
        name = entry.name  # type: ignore[attr-defined]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ParameterError(
                f"{self.family} name {name!r} is not valid; expected a letter followed by "
                "letters, digits or underscores"
            )
        if name in self.builtins:
            raise ParameterError(
                f"{self.family} {name!r} is built into xpmlp and cannot be replaced; register "
                "yours under another name"
            )
        if name in self._entries and not replace:
            raise ParameterError(
                f"{self.family} {name!r} is already registered; pass replace=True to replace it"
            )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove the user's entry ``name`` (a built-in one raises ``ParameterError``)."""
        if name in self.builtins:
            raise ParameterError(f"{self.family} {name!r} is built into xpmlp: not removable")
        self[name]  # noqa: B018 (an unknown name raises, listing the registry)
        del self._entries[name]

    def freeze_builtins(self) -> None:
        """Mark every entry registered so far as the package's own."""
        self.builtins = frozenset(self._entries)

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ParameterError(
                f"unknown {self.family} {name!r}; expected one of {', '.join(self._entries)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, where: Callable[[Entry], bool] | None = None) -> tuple[str, ...]:
        """The names of the entries for which ``where(entry)`` holds (all by default)."""
        return tuple(n for n, e in self._entries.items() if where is None or where(e))

    def check(
        self, what: str, name: object, where: Callable[[Entry], bool] | None = None, why: str = ""
    ) -> Entry:
        """The entry called ``name``, which must satisfy ``where``; else ``ParameterError``
        naming the argument ``what``, the value and the names allowed there."""
        allowed = self.names(where)
        if not isinstance(name, str) or name not in allowed:
            qualifier = f" ({why})" if why and name in self._entries else ""
            raise ParameterError(
                f"{what}={name!r} is not valid{qualifier}; expected one of "
                f"{', '.join(repr(n) for n in allowed)}"
            )
        return self._entries[name]
