"""Test lanes. ``make test`` runs everything. ``make test-fast`` (RIDGELINE_TEST_LANE=fast)
is the inner loop: no model, no subprocess. Tests marked ``model`` are deselected, and a
test that starts a process anyway (a broker, a daemon, a CLI run, a wheel pull) is
skipped at that moment, saying so: ``make test`` runs it."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

FAST = os.environ.get("RIDGELINE_TEST_LANE") == "fast"
# What libraries run on their own (ctypes.util.find_library asks ldconfig or the compiler)
_LIBRARY_HELPERS = frozenset({"ldconfig", "gcc", "cc", "ld", "objdump", "uname"})


def _program(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    command = args[0] if args else kwargs.get("args", "")
    first = command if isinstance(command, str | bytes) else (list(command) or [""])[0]
    name = os.fsdecode(first).split()[0] if first else ""
    return os.path.basename(name)


def pytest_configure(config: pytest.Config) -> None:
    if not FAST:
        return
    original = subprocess.Popen.__init__

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        if _program(args, kwargs) in _LIBRARY_HELPERS:
            original(self, *args, **kwargs)
            return
        pytest.skip("starts a process: runs in make test, not in the fast lane")

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]
    config.add_cleanup(lambda: setattr(subprocess.Popen, "__init__", original))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # `make fuzz` selects these: -m property
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)
    if not FAST:
        return
    kept = [item for item in items if item.get_closest_marker("model") is None]
    deselected = [item for item in items if item.get_closest_marker("model") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
