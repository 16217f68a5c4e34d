"""Method registry: stable names, near-match errors, discovery of this package's modules."""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from harness.errors import UnknownMethodError  # noqa: F401  (re-exported)
from methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}
_NOT_METHOD_MODULES = {"base", "registry", "tags"}
_discovered = False



def register(cls: type[Method]) -> type[Method]:
    """Class decorator. The name must be unique and equal the method's conf/method/<name>.yaml."""
    for attr in ("name", "version", "paper", "tags", "patterns"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__} lacks class attribute {attr!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if info.name not in _NOT_METHOD_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"methods.{info.name}")
    _discovered = True


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[Method]:
    _discover()
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UnknownMethodError(f"unknown method {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def build_method(name: str, params: dict | None = None) -> Method:
    cls = get_method_class(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        import dataclasses
        fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        raise ValueError(f"bad parameters for method {name!r}: {exc} (accepted: {fields or 'none'})") from None
