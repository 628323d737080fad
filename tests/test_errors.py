"""Every user-facing error derives from RebuyError; internal errors do not."""

import errno
import inspect

import pytest

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


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"),
                                         (errno.ENOSPC, "no space left"), (errno.EFBIG, "ulimit -f"),
                                         (errno.ENOTDIR, "not a directory"), (errno.EISDIR, "is a directory")])
def test_os_errors_of_the_users_environment_are_one_line_naming_the_path(code, words):
    line = errors.describe_os_error(OSError(code, "strerror", "/data/out.parquet"))
    assert line.startswith("/data/out.parquet: ") and words in line and "\n" not in line


def test_other_os_errors_are_not_dressed_up_as_user_errors(tmp_path):
    assert errors.describe_os_error(OSError(errno.EBADF, "Bad file descriptor")) is None
    assert errors.describe_os_error(OSError(errno.EIO, "Input/output error", "x")) is None
    assert errors.describe_os_error(FileExistsError(errno.EEXIST, "File exists", str(tmp_path))) is None  # a race
    assert errors.describe_os_error(FileNotFoundError("lifetimes is not installed")) == "lifetimes is not installed"


def test_a_rename_onto_a_directory_names_the_target():
    exc = IsADirectoryError(errno.EISDIR, "Is a directory", "/out/.s.parquet.tmp-1a2b", None, "/out/s.parquet")
    assert errors.describe_os_error(exc).startswith("/out/s.parquet: is a directory")


def test_at_path_keeps_the_subclass_and_errno():
    moved = errors.at_path(PermissionError(errno.EACCES, "Permission denied", "/m/.tmp-x"), "/m")
    assert isinstance(moved, PermissionError) and moved.errno == errno.EACCES and moved.filename == "/m"
