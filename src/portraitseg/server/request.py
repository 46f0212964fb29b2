"""What a segment request asks for, validated before any work: output, format, background,
and whether the result can be encoded at all (no fastapi here)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

from ..colour import COLOUR_SYNTAX, parse_colour_or_blur

# The encoders' own limits on a side (px). libjpeg's JPEG_MAX_DIMENSION is 65500; libpng's
# default user limit (which OpenCV keeps) is 1,000,000. Past them the encode fails after all
# the work is done, so a request that cannot be encoded is refused from the image header.
MAX_SIDE = {"png": 1_000_000, "jpeg": 65_500}


class ApiError(Exception):
    """A client-visible failure: HTTP status + one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Output(str, Enum):
    mask = "mask"
    cutout = "cutout"
    composite = "composite"


class Format(str, Enum):
    png = "png"
    jpeg = "jpeg"

    @classmethod
    def _missing_(cls, value: object) -> Format | None:
        # predict writes .jpg files, so "jpg" is what users type (pydantic calls this too).
        return cls.jpeg if isinstance(value, str) and value.lower() == "jpg" else None


BACKGROUND_HELP = (f"composite background: blur or a colour ({COLOUR_SYNTAX}; in a URL write # as %23, "
                   "or leave it out: ff8800)")


def parse_background(text: str) -> tuple[int, int, int] | str:
    """``background=`` -> ``"blur"`` or (r, g, b) in 0..255, with the same syntax as
    ``predict --background`` (:mod:`portraitseg.colour`) but never a file path."""
    try:
        return parse_colour_or_blur(text)
    except ValueError as exc:
        raise ApiError(400, f"background: {exc}") from None


def check_encodable(size: tuple[int, int], fmt: Format, what: str = "image") -> None:
    """413 when a result of ``size`` = (width, height) is past ``fmt``'s encoder limits."""
    limit = MAX_SIDE[fmt.value]
    w, h = size
    if max(w, h) > limit:
        other = " (format=png allows up to 1000000)" if fmt is Format.jpeg else ""
        raise ApiError(413, f"{what} is {w}x{h}; a {fmt.value} result can be at most {limit} pixels "
                            f"on a side{other}")


@dataclass
class SegmentRequest:
    image: bytes
    output: Output
    fmt: Format
    background: tuple[int, int, int] | str | None = None
    background_image: bytes | None = None
    # time.monotonic() after which nobody waits for the answer: the engine stops between stages.
    deadline: float = field(default_factory=lambda: time.monotonic() + 3600.0)

    def check_deadline(self) -> None:
        """Raise when the request has already timed out (its client got a 504): the worker
        stops instead of finishing work whose result is discarded."""
        if time.monotonic() > self.deadline:
            raise RequestExpired()


class RequestExpired(Exception):
    """The request's deadline passed while a worker held it; nobody reads the answer."""
