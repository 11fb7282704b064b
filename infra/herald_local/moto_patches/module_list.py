"""moto lists its package directory (a listdir and a few hundred isdir calls) on every request to
tell a backend's name from a host; the package does not change while it runs, so the list is
taken once.

Test: test_moto_patches.py::test_module_list_and_method_names_are_moto_s.
"""

from __future__ import annotations

from moto import backends


def apply() -> None:
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
