"""The public API keeps its names, arguments and defaults.

`tests/public_api.json` lists every public name of the package (the
`__all__` of the package and its public subpackages, and the public
functions of `plotting` and `datasets`) with, for each callable, its
arguments in order and their defaults. It was written before the house
was rebuilt (issue 19) and is compared here with what imports now: a
renamed, removed or reordered argument, or a changed default, fails. An
argument may become keyword-only; that is not compared. A name added to
the API is added to the file on purpose:

    python tests/test_public_api.py --write
"""

import functools
import importlib
import inspect
import json
import sys
from pathlib import Path

import pytest
from _helpers import PUBLIC_MODULES, public_names

SNAPSHOT = Path(__file__).with_name("public_api.json")


def describe(value):
    """Arguments and defaults of a class's `__init__` or a function."""
    if inspect.ismodule(value) or not callable(value):
        return None
    target = value.__init__ if inspect.isclass(value) else value
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    arguments = []
    for parameter in signature.parameters.values():
        if parameter.name == "self":
            continue
        default = (
            None
            if parameter.default is inspect.Parameter.empty
            else repr(parameter.default)
        )
        arguments.append(
            [parameter.name, default, parameter.kind == parameter.VAR_KEYWORD]
        )
    return arguments


@functools.cache
def current():
    api = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module):
            api[f"{module_name}.{name}"] = describe(getattr(module, name))
    return api


SAVED = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}


@pytest.mark.backend_independent
@pytest.mark.parametrize("name", sorted(SAVED))
def test_public_name_keeps_its_arguments(name):
    now = current()
    assert name in now, f"{name} is no longer public"
    assert now[name] == SAVED[name]


@pytest.mark.backend_independent
def test_no_public_name_is_unlisted():
    assert sorted(current()) == sorted(SAVED)


if __name__ == "__main__" and "--write" in sys.argv:
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
