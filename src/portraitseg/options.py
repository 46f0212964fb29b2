"""``option``: a dataclass field that carries its own help text, so the config is the one place
where a default and its meaning are written; the CLI generates its flags from it
(:mod:`portraitseg.commands._common`). Dependency-free: any layer's config may use it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def option(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None,
           **cli: Any) -> Any:
    """A field with ``help`` and optional CLI hints in its metadata: ``flag`` (another flag name,
    for compatibility), ``type``, ``choices``, ``metavar``, ``scale`` (the flag is in bigger
    units: field = flag x scale) and ``cli_default`` (the command's default, where it differs)."""
    metadata = {"help": help, **cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
