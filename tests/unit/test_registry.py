"""harness.registry.Registry: the one idiom behind every name -> code lookup."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest

from harness.errors import ConfigError, UnknownNameError
from harness.registry import Registry


@dataclass
class Thing:
    name: ClassVar[str] = "thing"
    size: int = 1


def test_lookup_build_and_listing():
    reg = Registry("widget", {"thing": Thing})
    assert reg.names() == ["thing"] and "thing" in reg and list(reg) == ["thing"] and len(reg) == 1
    assert reg.get("thing") is Thing and reg.build("thing", {"size": 3}).size == 3
    assert reg.items() == [("thing", Thing)]
    with pytest.raises(ValueError, match=r"bad parameters for widget 'thing'.*\(accepted: size\)"):
        reg.build("thing", {"colour": "red"})


def test_unknown_name_names_the_near_matches():
    reg = Registry("widget", {"thing": Thing, "other": Thing})
    with pytest.raises(UnknownNameError) as info:
        reg.get("thnig")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    assert str(info.value) == "unknown widget 'thnig'; did you mean thing? (available: other, thing)"
    assert "did you mean" not in str(reg.unknown("zzzzzz"))


def test_lazy_entries_import_on_first_use():
    reg = Registry("widget", {"encoder": "json:JSONEncoder"})
    import json

    assert reg.get("encoder") is json.JSONEncoder
    assert Registry("widget", {"module": "json"}).get("module") is json   # a module entry (recoveries)
    lazy = Registry("widget", {"x": "harness_no_such_module_for_test:X"})
    assert "x" in lazy and "harness_no_such_module_for_test" not in sys.modules   # listing imports nothing


def test_discovery_runs_once_and_check_guards_entries():
    calls = []
    reg: Registry = Registry("widget", discover=lambda: calls.append(reg.register(Thing)))
    assert reg.names() == ["thing"] and reg.names() == ["thing"] and len(calls) == 1

    def check(name, obj):
        if not hasattr(obj, "size"):
            raise TypeError(f"{name} lacks size")

    guarded = Registry("widget", check=check)
    with pytest.raises(TypeError, match="lacks size"):
        guarded.add("bad", object)
    with pytest.raises(ValueError, match="registered twice"):
        Registry("widget", {"thing": Thing}).add("thing", object)
