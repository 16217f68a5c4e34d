"""Method registry (harness.registry.Registry): stable names, near-match errors, discovery of this
package's modules on first lookup. The KV-cache policies are not methods: they have their own
registry (harness.kv.POLICIES) and config axis (`kv=`)."""

from __future__ import annotations

import importlib
import pkgutil

from harness.errors import UnknownMethodError  # noqa: F401  (re-exported)
from harness.registry import Registry
from methods.base import Method

_NOT_METHOD_MODULES = {"base", "registry", "tags"}
_REQUIRED = ("name", "version", "paper", "tags", "patterns")


def _check(name: str, cls: type) -> None:
    """The name must be unique and equal the method's conf/method/<name>.yaml."""
    for attr in _REQUIRED:
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__} lacks class attribute {attr!r}")


def _discover() -> None:
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if info.name not in _NOT_METHOD_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"methods.{info.name}")


METHODS: Registry[type[Method]] = Registry("method", error=UnknownMethodError, discover=_discover, check=_check)
register = METHODS.register   # class decorator of every method module


def available() -> list[str]:
    return METHODS.names()


def get_method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def build_method(name: str, params: dict | None = None) -> Method:
    return METHODS.build(name, params)
