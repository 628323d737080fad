"""Every user-facing error derives from RebuyError; internal errors do not."""

import inspect

import rebuy.errors as errors
from rebuy.errors import RebuyError


def test_every_error_class_derives_from_rebuy_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == "rebuy.errors"]
    assert len(classes) >= 15
    assert all(issubclass(c, RebuyError) for c in classes)


def test_no_input_error_is_declared_outside_errors_module():
    """A ValueError-style (input) error declared elsewhere would escape the CLI's one-line handler;
    internal control-flow exceptions (e.g. the optimiser's NotConverged, a RuntimeError) may live
    beside their code."""
    import importlib
    import pkgutil

    import rebuy

    outside = []
    for mod in pkgutil.walk_packages(rebuy.__path__, "rebuy."):
        if mod.name == "rebuy.errors":
            continue
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, ValueError | KeyError) and obj.__module__ == mod.name:
                outside.append(f"{mod.name}.{name}")
    assert outside == []


def test_user_errors_stay_value_errors_for_old_callers():
    assert issubclass(errors.DataError, ValueError) and issubclass(errors.ConfigError, ValueError)
    assert not issubclass(FloatingPointError, RebuyError)
