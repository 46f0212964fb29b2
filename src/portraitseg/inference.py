"""High-level inference API: ``Segmenter`` (create once, reuse) and ``load_image``.

```python
from portraitseg import Segmenter

seg = Segmenter()                                   # bundled model, fastest backend, default post-processing
alpha = seg.mask("photo.jpg")                       # float32 (H, W) in [0, 1]
rgba = seg.cutout("photo.jpg")                      # uint8 (H, W, 4), straight alpha
out = seg.replace_background("photo.jpg", "beach.jpg")   # or (0, 255, 0), "green", "#00ff00", "blur"
```

Images may be a path (str/Path), a ``PIL.Image`` or a numpy array. Arrays are taken as **RGB**
(not OpenCV's BGR): uint8 (H, W, 3) as is; (H, W) grayscale; (H, W, 4) RGBA (composited on
white); uint16 scaled to 8 bits; other integer arrays (int32, int64, ...) must hold 0..255 and are
taken as 8-bit; floats in [0, 1] are scaled by 255, floats with a maximum in (1, 255] are taken
as 0..255. Anything else (negative values, ints over 255, floats over 255) raises ``ValueError``
naming the dtype and the range found. Files and PIL images go through :func:`load_image` (EXIF
orientation, grayscale/RGBA/16-bit/CMYK/palette conversion).

A ``Segmenter`` is the user-facing face of :class:`~portraitseg.pipeline.Pipeline` (it adds
image loading and background parsing); models open through
:func:`~portraitseg.runtimes.open_model`. It is thread-safe: each calling thread gets its own
pipeline (post-processing buffers) over the shared model, through
:meth:`~portraitseg.runtimes.Runtime.for_thread` (the same onnxruntime/torch session; a fresh
TFLite interpreter, which is not thread-safe).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from . import postprocess as pp
from .data.io import decode_error, open_image
from .defaults import MAX_PIXELS
from .pipeline import Pipeline
from .runtimes import Runtime, open_model

if TYPE_CHECKING:
    from PIL import Image

ImageInput = Union[str, Path, "Image.Image", np.ndarray]
BackgroundInput = Union[str, Path, "Image.Image", np.ndarray, tuple[int, int, int]]

# RGBA inputs are flattened onto this colour: transparent regions of a logo/sticker-style PNG
# then read as plain background instead of whatever RGB garbage sits under alpha = 0.
TRANSPARENT_FILL = (255, 255, 255)


# --------------------------------------------------------------------------- image loading


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB uint8 (H, W, 3)."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (and 32-bit int/float) grayscale: PIL's convert("L") clips at 255 instead of
        # scaling, which would turn most 16-bit photos white. Scale 0..65535 -> 0..255.
        arr = np.asarray(img)
        return _array_to_rgb(arr.astype(np.uint16) if mode != "F" else arr)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (*TRANSPARENT_FILL, 255))
        img = Image.alpha_composite(canvas, img)
    # CMYK, YCbCr, LAB, HSV, L, 1, RGBA (now opaque) -> RGB via PIL's own conversions.
    return np.ascontiguousarray(np.asarray(img.convert("RGB")), dtype=np.uint8)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Numpy image (RGB order) -> RGB uint8 (H, W, 3); see the module docstring for the rules."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ValueError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}")
    arr = _to_u8(arr)
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if arr.shape[2] == 4:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        fill = np.asarray(TRANSPARENT_FILL, np.float32)
        arr = (arr[..., :3].astype(np.float32) * a + fill * (1.0 - a) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_u8(arr: np.ndarray) -> np.ndarray:
    """Pixel values of any supported dtype -> uint8. Integer and float arrays are checked for
    their range first: an int64 array of 0..255 read as 16-bit would come out black, and a
    float array of 0..255 read as [0, 1] would come out white (the model then sees nothing)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{arr.dtype} image values must be 0..255 (8-bit); got {lo}..{hi} "
                             f"(for 16-bit data pass a uint16 array)")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{arr.dtype} image has NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 255.0:
            raise ValueError(f"{arr.dtype} image values must be in [0, 1] or [0, 255]; got {lo:g}..{hi:g}")
        if hi > 1.0:  # 0..255 floats (e.g. after img.astype(float))
            return np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return pp.to_u8(arr)  # [0, 1] floats: the same rounding as a matte
    raise ValueError(f"unsupported image dtype {arr.dtype}")


def load_image(image: ImageInput, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path, PIL image or numpy array -> RGB uint8 (H, W, 3).

    Files: EXIF orientation applied; grayscale, palette, CMYK converted; RGBA/LA composited on
    white (``TRANSPARENT_FILL``); 16-bit scaled to 8-bit. Only the common photo formats are
    opened (:data:`~portraitseg.data.io.IMAGE_FORMATS`, by content, not by name). An unreadable
    file, another format, or one whose header declares more than ``max_pixels``, raises
    :class:`~portraitseg.data.DataError` whose message starts with the path.
    """
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if isinstance(image, (str, Path)):
        return _read_file(Path(image), max_pixels)
    from PIL import Image

    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    raise TypeError(f"expected a path, PIL.Image or numpy array; got {type(image).__name__}")


def _read_file(path: Path, max_pixels: int) -> np.ndarray:
    """Decode through :func:`~portraitseg.data.io.open_image`: the format allow-list and the
    header pixel limit every reader shares."""
    with open_image(path, max_pixels) as img:
        try:
            img.load()  # decode now: truncated files fail here, inside the try
            return _pil_to_rgb(img)
        except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, EOFError... on bad bytes
            raise decode_error(path, exc) from None


# --------------------------------------------------------------------------- backgrounds


def parse_background(background: BackgroundInput, max_pixels: int = MAX_PIXELS) -> pp.Background:
    """An image (path/PIL/array), ``"blur"`` or a colour in any form of
    :func:`portraitseg.colour.parse_colour` (tuple, #rrggbb, rrggbb, r,g,b, name) -> what
    :func:`portraitseg.postprocess.composite` takes. An existing file wins over a colour."""
    from .colour import COLOUR_SYNTAX, parse_colour

    if isinstance(background, tuple):
        return parse_colour(background)
    if isinstance(background, np.ndarray) or not isinstance(background, (str, Path)):
        return load_image(background, max_pixels)
    text = str(background)
    if text == "blur":
        return "blur"
    if Path(text).is_file():
        return load_image(text, max_pixels)
    try:
        return parse_colour(text)
    except ValueError:
        raise ValueError(
            f"background {text!r} is not an image file, a colour ({COLOUR_SYNTAX}) or 'blur'"
        ) from None


# --------------------------------------------------------------------------- segmenter


@dataclass
class Prediction:
    """One image's results: the RGB input and its alpha matte (both owned by the caller)."""

    image: np.ndarray
    alpha: np.ndarray


class Segmenter:
    """Person segmentation with a model loaded once; see the module docstring.

    ``model``/``backend``/``threads`` go to :func:`~portraitseg.runtimes.open_model`
    (``"default"`` + ``"auto"``: the bundled model on the fastest installed backend);
    ``threads=None`` leaves the backend's default (all cores); ``postprocess=None`` uses
    :class:`~portraitseg.postprocess.PostprocessConfig`'s defaults; image files (and background
    files) over ``max_pixels`` are refused from their header.
    """

    def __init__(
        self,
        model: str | Path = "default",
        backend: str = "auto",
        postprocess: pp.PostprocessConfig | None = None,
        threads: int | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.max_pixels = max_pixels
        pipe = Pipeline(open_model(model, backend, threads), postprocess)
        self._runtime, self._config = pipe.runtime, pipe.config
        # One pipeline per calling thread: its post-processing workspace is reused between
        # calls, so two threads sharing one would overwrite each other's masks mid-call.
        self._local = threading.local()
        self._local.pipe = pipe

    @property
    def pipeline(self) -> Pipeline:
        """The calling thread's pipeline (made on its first call, over the shared model)."""
        pipe = getattr(self._local, "pipe", None)
        if pipe is None:
            pipe = self._local.pipe = Pipeline(self._runtime.for_thread(), self._config)
        return pipe

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    @property
    def postprocessor(self) -> pp.Postprocessor:
        return self.pipeline.postprocessor

    @property
    def config(self) -> pp.PostprocessConfig:
        return self._config

    def lowres_prob(self, image: np.ndarray) -> np.ndarray:
        """Model probability at the model's resolution for an RGB uint8 image."""
        return self.pipeline.model_prob(image)

    def predict(self, image: ImageInput) -> Prediction:
        rgb = load_image(image, self.max_pixels)
        pipe = self.pipeline
        # Copy: the pipeline's workspace is overwritten by this thread's next call.
        alpha = pipe.alpha(pipe.lowres(rgb), rgb).copy()
        return Prediction(rgb, alpha)

    def mask(self, image: ImageInput) -> np.ndarray:
        """Alpha matte float32 (H, W) in [0, 1] at the image's size (post-processed)."""
        return self.predict(image).alpha

    def render(self, prediction: Prediction, kind: str, background: pp.Background = "blur") -> np.ndarray:
        """``mask`` (uint8), ``cutout`` (RGBA) or ``composite`` of a prediction (a fresh array)."""
        out = self.pipeline.render(prediction.image, prediction.alpha, kind, background)
        return out.copy() if kind == "composite" else out

    def cutout(self, image: ImageInput) -> np.ndarray:
        """RGBA uint8 (H, W, 4): the image with the matte as (straight) alpha."""
        return self.render(self.predict(image), "cutout")

    def replace_background(self, image: ImageInput, background: BackgroundInput) -> np.ndarray:
        """RGB uint8 (H, W, 3): the person over ``background`` (image scaled to cover and
        centre-cropped, RGB tuple, colour name/#hex, or ``"blur"``)."""
        return self.render(self.predict(image), "composite", parse_background(background, self.max_pixels))

    def __repr__(self) -> str:
        return f"Segmenter({self.runtime!r}, {self.config})"
