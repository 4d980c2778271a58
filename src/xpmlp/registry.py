"""A registry: the one list of the activations, the losses or the optimizers.

Each family keeps its entries in one ``Registry``; every other list of names
(validation, the CLI's choices, ``xpmlp explain``, the README's tables, the
tests' parameters) is derived from it, and an unknown name raises
``ParameterError`` saying what was received and what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import ParameterError

Entry = TypeVar("Entry")


class Registry(Mapping[str, Entry], Generic[Entry]):
    """Entries of one family by name (each entry has a ``name``), in definition order."""

    def __init__(self, family: str, entries: Iterable[Entry]) -> None:
        self.family = family
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            name = entry.name  # type: ignore[attr-defined]
            if name in self._entries:
                raise ValueError(f"{family} {name!r} is registered twice")
            self._entries[name] = entry

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ParameterError(
                f"unknown {self.family} {name!r}; expected one of {', '.join(self._entries)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, where: Callable[[Entry], bool] | None = None) -> tuple[str, ...]:
        """The names of the entries for which ``where(entry)`` holds (all by default)."""
        return tuple(n for n, e in self._entries.items() if where is None or where(e))

    def check(self, what: str, name: Any, where: Callable[[Entry], bool] | None = None,
              why: str = "") -> Entry:
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
