import pytest

from harness.targets import Target, TargetError
from methods.registry import UnknownMethodError, available, build_method, get_method_class
from methods.tags import Tags


def test_registry_lists_foundation_methods():
    assert {"dense", "magnitude", "magnitude_global", "wanda"} <= set(available())


def test_unknown_method_suggests_near_matches():
    with pytest.raises(UnknownMethodError, match="did you mean wanda"):
        get_method_class("wandaa")


def test_bad_method_params_are_named():
    with pytest.raises(ValueError, match="bad parameters for method 'wanda'"):
        build_method("wanda", {"alpha": 1})


def test_tags_reject_words_outside_the_vocabulary():
    with pytest.raises(ValueError, match="criteria"):
        Tags("Unstructured", "Vibes", "Sparsity", "Data free", "Without", "Frozen")


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="x", pattern="unstructured", ratio=1.0), r"\[0, 1\)"),
    (dict(name="x", pattern="unstructured", ratio=-0.1), r"\[0, 1\)"),
    (dict(name="x", pattern="nm", n=4, m=2, ratio=0.5), "N <= M"),
    (dict(name="x", pattern="nm", n=2, m=4, ratio=0.6), "ratio"),
    (dict(name="x", pattern="diagonal"), "unknown pattern"),
    (dict(name="x", pattern="sublayers", count=2), "sublayer"),
])
def test_target_validation(kwargs, match):
    with pytest.raises(TargetError, match=match):
        Target(**kwargs)
