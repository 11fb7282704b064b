"""moto lists the methods of a handler class, through `inspect.getmembers`, on every request to
check the action's name (6 % of moto's CPU in the full chaos run); the classes do not change once
patched, so the names are computed once per class.

Test: test_moto_patches.py::test_module_list_and_method_names_are_moto_s.
"""

from __future__ import annotations

import functools
import inspect

from moto.core import responses as moto_responses


def method_names(cls: type) -> frozenset[str]:
    return frozenset(name for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction))


def apply() -> None:
    moto_responses.method_names_from_class = functools.cache(method_names)  # type: ignore[attr-defined]
