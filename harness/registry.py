"""One registry idiom for every "name in the config -> code" lookup (methods, KV policies,
evaluators, recoveries, allocators, importance metrics, statistics collectors).

An entry is either the object itself or a "module:attribute" (or "module") string imported on first use, so a
registry of heavy modules costs nothing until a run asks for one. A `discover` callable fills
the registry on first lookup (the methods package imports its modules); nothing registers at
import time of this module. An unknown name raises the registry's `error` (a ConfigError) naming
the near matches, so every registry answers a typo the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entries: dict[str, T | str] | None = None, *,
                 error: type[UnknownNameError] = UnknownNameError,
                 discover: Callable[[], None] | None = None,
                 check: Callable[[str, Any], None] | None = None):
        """kind: what the names name, in messages ("method", "allocator", ...); check(name, obj)
        runs when an entry is added (required attributes, say)."""
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._error = error
        self._discover = discover
        self._discovered = discover is None
        self._check = check
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    # -- filling -----------------------------------------------------------------------------------
    def add(self, name: str, entry: T | str) -> T | str:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} name {name!r} registered twice")
        if self._check is not None and not isinstance(entry, str):
            self._check(name, entry)
        self._entries[name] = entry
        return entry

    def register(self, obj: T) -> T:
        """Class decorator: the class's `name` attribute is its registry name."""
        name = getattr(obj, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"{getattr(obj, '__name__', obj)} lacks class attribute 'name'")
        self.add(name, obj)
        return obj

    def _ensure(self) -> None:
        if not self._discovered:
            self._discovered = True   # set first: discovery imports modules that register here
            try:
                self._discover()
            except BaseException:
                self._discovered = False
                raise

    # -- reading -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        """(name, object) of every entry, lazy entries imported."""
        return [(name, self.get(name)) for name in self.names()]

    def unknown(self, name: object) -> UnknownNameError:
        """The error for a name that is not registered: near matches first, then every name."""
        names = self.names()
        near = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        return self._error(f"unknown {self.kind} {name!r}{hint} (available: {', '.join(names)})")

    def get(self, name: str) -> T:
        """The registered object (a lazy "module:attribute" entry is imported now)."""
        if name not in self:
            raise self.unknown(name)
        entry = self._entries[name]
        if isinstance(entry, str):   # "module:attribute", or "module" for the module itself
            module, _, attr = entry.partition(":")
            entry = importlib.import_module(module)
            entry = getattr(entry, attr) if attr else entry
            if self._check is not None:
                self._check(name, entry)
            self._entries[name] = entry
        return entry

    def build(self, name: str, params: dict | None = None) -> Any:
        """An instance of the registered class from its parameters (a one-line error on a bad one)."""
        cls = self.get(name)
        try:
            return cls(**(params or {}))
        except TypeError as exc:
            fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
            raise ValueError(f"bad parameters for {self.kind} {name!r}: {exc} "
                             f"(accepted: {', '.join(fields) or 'none'})") from None
