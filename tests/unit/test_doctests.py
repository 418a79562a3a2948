"""Every doctest in the package runs (the examples in docstrings are kept true)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import s3sync

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(s3sync.__path__, "s3sync.")
    if not m.name.startswith("s3sync.contrib") and m.name != "s3sync.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) of {name} failed"
