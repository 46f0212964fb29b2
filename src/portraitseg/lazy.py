"""Lazy package attributes: a package names what its heavy submodules export, and they are
imported on first use (PEP 562), so ``import portraitseg`` and building the CLI stay light.
Stdlib only."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: attribute ``name`` is imported from the module
    ``where[name]`` (relative to ``package``, e.g. ``".trainer"`` or ``"..runtimes"``) the first
    time it is asked for, then kept on the package."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
