"""The registry kernel (`alignment.registry`) every algorithm family is built on."""

from dataclasses import dataclass

import pytest

from alignment.registry import Registry, Spec, require_in_range, require_positive


@dataclass(frozen=True)
class _ToySpec(Spec):
    scale_invariant: bool = False


def _toy_registry(validator=None):
    registry = Registry("toy rule", _ToySpec, inputs=("x",), validator=validator)

    @registry.register("double", scale_invariant=True)
    def double(*, x, factor: float = 2.0, offset):
        """Multiply by a factor."""
        return x * factor + offset

    return registry


def test_signature_is_split_into_inputs_hparams_and_required_hparams():
    spec = _toy_registry().get("double")
    assert spec.inputs == ("x",) and spec.required_inputs == ("x",)
    assert dict(spec.hparams) == {"factor": 2.0}
    assert spec.required_hparams == ("offset",)
    assert spec.scale_invariant is True
    assert spec.summary == "Multiply by a factor."
    assert spec.describe_hparams() == "factor=2.0, offset (required)"


def test_duplicate_unknown_and_missing_names_fail_with_the_valid_choices():
    registry = _toy_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("double")(lambda *, x: x)
    with pytest.raises(ValueError, match="Unknown toy rule 'triple'. Valid names: double"):
        registry.get("triple")
    with pytest.raises(ValueError, match=r"does not take \['facter'\].*factor=2.0"):
        registry.validate("double", facter=1.0, offset=0.0)
    with pytest.raises(ValueError, match=r"needs the hyper-parameter\(s\) \['offset'\]"):
        registry.validate("double")
    with pytest.raises(ValueError, match=r"inputs \['y'\] are not keyword-only"):
        registry.register("bad", inputs=("y",))(lambda *, x: x)


def test_validate_runs_the_family_validator_after_the_names():
    seen = []

    def validator(spec, hparams):
        seen.append((spec.name, hparams))
        require_positive("factor", hparams.get("factor", spec.hparams["factor"]))

    registry = _toy_registry(validator)
    registry.validate("double", offset=1.0)
    assert seen == [("double", {"offset": 1.0})]
    with pytest.raises(ValueError, match="`factor` must be a number > 0, got -1"):
        registry.validate("double", offset=1.0, factor=-1)
    assert registry.names() == ["double"] and "double" in registry and len(registry) == 1
    assert registry.describe() == "double: Multiply by a factor. (hyper-parameters: factor=2.0, offset (required))"


def test_value_checks():
    with pytest.raises(ValueError, match="> 0"):
        require_positive("beta", True)
    require_positive("beta", 0.1)
    require_in_range("alpha", 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\)"):
        require_in_range("alpha", 1.0, 0.0, 1.0)
    require_in_range("alpha", 1.0, 0.0, 1.0, high_inclusive=True)


def test_unregister_removes_an_entry_and_frees_its_name():
    registry = _toy_registry()
    spec = registry.unregister("double")
    assert spec.name == "double" and "double" not in registry and registry.names() == []
    with pytest.raises(ValueError, match="Unknown toy rule 'double'"):
        registry.unregister("double")
    registry.register("double")(lambda *, x: x)  # the name is free again
    assert registry.get("double").inputs == ("x",)
