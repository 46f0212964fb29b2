"""One colour syntax for every caller: ``predict``/``video``/``webcam --background`` (through
:func:`portraitseg.inference.parse_background`), the HTTP API's ``background=`` and the Python
API's ``(r, g, b)`` tuples all accept the same forms, so a colour that works in one place works
in all of them.

Accepted: ``#rrggbb`` / ``#rgb``, bare ``rrggbb`` (a shell or URL cannot carry ``#`` without
quoting/escaping), ``r,g,b`` (0..255 each), CSS colour names and the other forms of PIL's
``ImageColor`` (``rgb(...)``, ``hsl(...)``), or a 3-sequence of ints. Dependency: Pillow only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

RGB = tuple[int, int, int]
BLUR = "blur"
# For help texts and error messages, so every caller describes the same syntax.
COLOUR_SYNTAX = "#rrggbb, rrggbb, r,g,b or a colour name"

_BARE_HEX = re.compile(r"[0-9a-fA-F]{6}")
_TRIPLE = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*")


def parse_colour(value: str | Sequence[int]) -> RGB:
    """A colour in any accepted form (module docstring) -> ``(r, g, b)`` ints in 0..255.

    Raises ValueError naming the value and the accepted forms.
    """
    if not isinstance(value, str):
        return _from_sequence(value)
    text = value.strip()
    if _BARE_HEX.fullmatch(text):
        text = "#" + text
    triple = _TRIPLE.fullmatch(text)
    if triple:
        return _from_sequence([int(g) for g in triple.groups()], shown=value)
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a colour ({COLOUR_SYNTAX}, e.g. '#3366ff', '3366ff', "
                         f"'51,102,255' or 'green')") from None
    return _from_sequence(rgb[:3], shown=value)  # rgb(300,0,0) and hsl(0,200%,50%) parse out of 0..255


def parse_colour_or_blur(value: str | Sequence[int]) -> RGB | Literal["blur"]:
    """``"blur"`` or a colour (:func:`parse_colour`). Never a file path: safe for values that
    come from the network (the HTTP API)."""
    if isinstance(value, str) and value.strip() == BLUR:
        return BLUR
    return parse_colour(value)


def _from_sequence(value: object, shown: object = None) -> RGB:
    shown = value if shown is None else shown
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"{shown!r} is not a colour ({COLOUR_SYNTAX}, or an (r, g, b) tuple)") from None
    # bool is an int subclass; True/False as a channel is a bug in the caller, not a colour.
    if len(items) != 3 or not all(_is_int(v) for v in items):
        raise ValueError(f"{shown!r} is not a colour: expected 3 whole numbers (r, g, b)")
    rgb = tuple(int(v) for v in items)
    if not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"{shown!r} is not a colour: each of r, g, b must be 0..255")
    return rgb  # type: ignore[return-value]


def _is_int(v: object) -> bool:
    import numbers

    return isinstance(v, numbers.Integral) and not isinstance(v, bool)
