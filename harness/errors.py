"""Input errors: a config value, a target, a data set, a model source, a method name, a suite, a
results directory, an export format or an evaluate input that cannot run. Each is a `ConfigError` with a one-line message, raised before anything expensive.

A leaf module (imports nothing from the project), so every layer can raise these without an
import cycle; validation lets them through unchanged instead of catching and re-wrapping.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run; the message is one line."""


class TargetError(ConfigError):
    """A sparsity target that is not well formed (ratio out of range, bad N:M, unknown pattern)."""


class DataError(ConfigError):
    """A corpus or split that is unknown or not available offline."""


class ModelSourceError(ConfigError):
    """A model source that cannot be loaded safely (unknown kind, pickle without allow_pickle, ...)."""


class UnknownNameError(ConfigError, KeyError):
    """A name that no registry (harness.registry) holds (still a KeyError for lookups that expect one)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownMethodError(UnknownNameError):
    """A method name that is not registered."""


class SuiteError(ConfigError):
    """A suite that cannot be expanded (unknown suite, bad sweep syntax)."""


class SchemaError(ConfigError):
    """A config value of the wrong type or out of range (harness.schema); the message names the key."""


def one_line(message: str) -> str:
    return " ".join(str(message).split())
