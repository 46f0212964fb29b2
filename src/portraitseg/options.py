"""``option``: a dataclass field that carries its own help text and allowed values, so the config
is the one place where a default, its meaning and its range are written; the CLI generates its
flags from it (:mod:`portraitseg.commands._common`) and checks each value with
:func:`check_value` as it parses it, and each config's ``validate()`` runs :func:`check_options`
for the library and the server. Dependency-free: any layer's config may use it.

Every number is checked: NaN and infinity are never an option's value, and a number is not
negative unless its :class:`Bounds` say otherwise (counts, sizes, seconds, thresholds: a
negative value slipping through means garbage out with exit 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """The allowed values of a numeric option: ``low``/``high`` (None: unbounded), open
    (``low_open``: value > low) or closed; ``odd``: 0 (off) or an odd number (kernel sizes)."""

    low: float | None = 0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    odd: bool = False

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` ("must be ..."), or None."""
        if not math.isfinite(value):
            rule = self.describe()
            return "must be a finite number" + ("" if rule == "a number" else f" {rule}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            return f"must be {self.describe()}"
        if self.odd and value and value % 2 != 1:
            return "must be 0 (off) or an odd number"
        return None

    def describe(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "a number"


# The rule of a numeric option that states none; ANY for the rare option that may be negative.
NOT_NEGATIVE = Bounds()
POSITIVE = Bounds(low_open=True)
ANY = Bounds(low=None)


def option(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None,
           bounds: Bounds | None = None, **cli: Any) -> Any:
    """A field with ``help``, its allowed values (``bounds``; default :data:`NOT_NEGATIVE`)
    and optional CLI hints in its metadata: ``flag`` (another flag name, for compatibility),
    ``type``, ``choices``, ``metavar``, ``scale`` (the flag is in bigger units: field = flag x
    scale) and ``cli_default`` (the command's default, where it differs)."""
    metadata = {"help": help, **cli}
    if bounds is not None:
        metadata["bounds"] = bounds
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    """The option's command-line flag: ``metadata["flag"]`` or ``--field-name``."""
    return str(field.metadata.get("flag") or "--" + field.name.replace("_", "-"))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _numbers(value: Any) -> list[float] | None:
    """The numbers in an option's value (a tuple option holds several), None if it holds none."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    found = [float(v) for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return found or None


def check_value(field: dataclasses.Field, value: Any) -> str | None:
    """The one check of an option's value (in the config's units): what is wrong ("must be
    ..."), or None. ``None`` (off) and non-numbers pass (choices are argparse's)."""
    numbers = _numbers(value)
    if numbers is None:
        return None
    bounds: Bounds = field.metadata.get("bounds", NOT_NEGATIVE)
    for number in numbers:
        problem = bounds.problem(number)
        if problem:
            return problem
    return None


def check_options(config: Any) -> None:
    """Raise ValueError ``--flag must be ...; got VALUE`` (one line) for the first field of the
    dataclass ``config`` whose value :func:`check_value` refuses; fields without help (not
    options) are skipped. The value is shown in the flag's units."""
    for field in dataclasses.fields(config):
        if "help" not in field.metadata:
            continue
        value = getattr(config, field.name)
        problem = check_value(field, value)
        if problem:
            scale = field.metadata.get("scale")
            shown = f"{value / scale:g}" if scale and isinstance(value, (int, float)) else _shown(value)
            raise ValueError(f"{flag_name(field)} {problem}; got {shown}")


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_type(field: dataclasses.Field, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """The argparse ``type`` of an option's flag: ``convert`` the text, then :func:`check_value`
    in the config's units (flag x scale), so a bad value is a one-line usage error naming the
    flag before anything runs (and before a scale's int() could fail on NaN or infinity)."""

    def parse(text: str) -> Any:
        value = convert(text)
        scale = field.metadata.get("scale")
        problem = check_value(field, value * scale if scale and _numbers(value) else value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}; got {text}")
        return value

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid X value"
    parse.option = field  # type: ignore[attr-defined]  # which option a parser's flag is (tests, docs)
    return parse
