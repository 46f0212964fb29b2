"""Synthetic test clips with known ground truth, built at test time from a real photo + mask.

The person (the photo with its mask as alpha, cropped to the mask's bounding box) is pasted on
a real background and the clip alternates *still* segments (person still: only sensor noise,
lighting drift and occasional camera shake change the frame) and *moving* segments (the person
slides sideways). The ground-truth mask of every frame is known by construction. Nothing here
is stored: clips are generated in memory (and optionally written to a tmp video file).

```python
clip = make_clip(photo_rgb, mask, background_rgb, ClipConfig(width=640, height=360))
clip.frames[i], clip.masks[i], clip.moving[i]
write_video(clip.frames, "/tmp/clip.avi", clip.fps)     # MJPG: always available in OpenCV
```

Without real data, :func:`synthetic_person` and :func:`synthetic_background` make a
procedural head-and-shoulders figure and a textured backdrop (used by ``video --bench``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

Segment = tuple[str, int]  # ("still" | "move", number of frames)


@dataclass
class ClipConfig:
    width: int = 640
    height: int = 360
    fps: float = 30.0
    segments: tuple[Segment, ...] = (("still", 20), ("move", 20), ("still", 20))
    person_height: float = 0.85  # fraction of the frame height
    speed: float = 6.0  # px per frame while moving (alternating direction)
    shake_px: int = 2  # max camera-shake offset; the offset jumps now and then (handheld)
    shake_every: int = 12  # mean frames between shake jumps
    noise_sigma: float = 3.0  # sensor noise, grey levels
    light_amplitude: float = 0.12  # global gain varies as 1 +- this over the clip
    seed: int = 0


@dataclass
class Clip:
    frames: list[np.ndarray]  # RGB uint8 (H, W, 3)
    masks: list[np.ndarray]  # uint8 (H, W) in {0, 1}
    moving: np.ndarray  # bool per frame: the person moved since the previous frame
    fps: float
    segments: tuple[Segment, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.frames)


def _person_sprite(photo: np.ndarray, mask: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop photo+mask to the mask's bounding box and scale to ``height`` px tall."""
    binary = mask > (127 if mask.dtype == np.uint8 and mask.max() > 1 else 0.5)
    ys, xs = np.nonzero(binary)
    if ys.size == 0:
        raise ValueError("mask is empty: no person to cut out")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop, alpha = photo[y0:y1, x0:x1], binary[y0:y1, x0:x1].astype(np.float32)
    s = height / crop.shape[0]
    w = max(1, round(crop.shape[1] * s))
    crop = cv2.resize(crop, (w, height), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.resize(alpha, (w, height), interpolation=cv2.INTER_LINEAR)
    return crop, alpha


def _positions(cfg: ClipConfig, sprite_w: int) -> tuple[list[int], np.ndarray]:
    """x of the sprite's left edge per frame, and the per-frame 'moved' flag."""
    lo, hi = 0, max(0, cfg.width - sprite_w)
    x = float((lo + hi) // 2)
    xs, moving, direction = [], [], 1.0
    for kind, n in cfg.segments:
        if kind not in ("still", "move"):
            raise ValueError(f"segment kind must be 'still' or 'move'; got {kind!r}")
        for _ in range(n):
            if kind == "move":
                if not lo <= x + direction * cfg.speed <= hi:
                    direction = -direction  # bounce off the frame edge
                x += direction * cfg.speed
            xs.append(round(x))
            moving.append(kind == "move" and len(xs) > 1)
        direction = -direction
    return xs, np.asarray(moving, bool)


def _shake(cfg: ClipConfig, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Integer camera offsets: constant for a while, then a jump (a handheld camera's jolts)."""
    off, out = (0, 0), []
    for _ in range(n):
        if cfg.shake_px and rng.random() < 1.0 / max(cfg.shake_every, 1):
            off = tuple(int(v) for v in rng.integers(-cfg.shake_px, cfg.shake_px + 1, size=2))
        out.append(off)
    return out


def make_clip(
    photo: np.ndarray, mask: np.ndarray, background: np.ndarray, cfg: ClipConfig | None = None
) -> Clip:
    """Photo (RGB uint8) + its person mask (uint8 0/255 or 0/1, or float) + a background image
    (RGB, any size: scaled to cover) -> a :class:`Clip`."""
    from .postprocess import resize_cover

    cfg = cfg or ClipConfig()
    rng = np.random.default_rng(cfg.seed)
    H, W = cfg.height, cfg.width
    # Shake shifts the whole scene: render on a margin-padded canvas and crop per frame.
    m = cfg.shake_px
    bg = resize_cover(background, (H + 2 * m, W + 2 * m)).astype(np.float32)
    sprite, alpha = _person_sprite(photo, mask, max(8, round(H * cfg.person_height)))
    sprite = sprite.astype(np.float32)
    sh, sw = alpha.shape
    xs, moving = _positions(cfg, sw)
    shakes = _shake(cfg, len(xs), rng)
    n = len(xs)
    frames, masks = [], []
    for t, (x, (dx, dy)) in enumerate(zip(xs, shakes)):
        canvas, gt = bg.copy(), np.zeros(bg.shape[:2], np.float32)
        y = m + H - sh  # feet (or the photo's bottom edge) on the frame's bottom edge
        x0, x1 = m + x, m + min(x + sw, W)
        a = alpha[:, : x1 - x0, None]
        canvas[y : y + sh, x0:x1] = a * sprite[:, : x1 - x0] + (1 - a) * canvas[y : y + sh, x0:x1]
        gt[y : y + sh, x0:x1] = alpha[:, : x1 - x0]
        canvas = canvas[m + dy : m + dy + H, m + dx : m + dx + W]
        gt = gt[m + dy : m + dy + H, m + dx : m + dx + W]
        gain = 1.0 + cfg.light_amplitude * np.sin(2 * np.pi * t / max(n, 1))
        noisy = canvas * gain + rng.normal(0.0, cfg.noise_sigma, canvas.shape).astype(np.float32)
        frames.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
        masks.append((gt > 0.5).astype(np.uint8))
    return Clip(frames, masks, moving, cfg.fps, cfg.segments)


def write_video(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """RGB frames -> a video file (codec from the extension: .avi MJPG, .mp4 mp4v)."""
    path = Path(path)
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write {fourcc} video")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def read_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    """All frames (RGB) and the fps of a video file."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"{path}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, fps


# --------------------------------------------------------------------------- procedural inputs


def synthetic_person(height: int = 480, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A procedural head-and-shoulders 'photo' (RGB) and its mask (uint8 0/255)."""
    rng = np.random.default_rng(seed)
    w = int(height * 0.8)
    mask = np.zeros((height, w), np.uint8)
    cx = w // 2
    cv2.ellipse(mask, (cx, int(height * 0.28)), (int(w * 0.17), int(height * 0.16)), 0, 0, 360, 255, -1)
    neck = int(w * 0.07)
    cv2.rectangle(mask, (cx - neck, int(height * 0.40)), (cx + neck, int(height * 0.50)), 255, -1)
    cv2.ellipse(mask, (cx, height), (int(w * 0.45), int(height * 0.5)), 0, 180, 360, 255, -1)
    photo = np.empty((height, w, 3), np.uint8)
    photo[:] = (200, 160, 140)
    photo[int(height * 0.45) :] = (40, 70, 140)  # shirt
    noise = rng.normal(0, 6, photo.shape)
    return np.clip(photo + noise, 0, 255).astype(np.uint8), mask


def synthetic_background(height: int = 720, width: int = 1280, seed: int = 1) -> np.ndarray:
    """A textured backdrop: smooth colour gradient + blurred noise blobs + a few edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([120 + 60 * xx / width, 140 + 40 * yy / height, 110 + 50 * (1 - xx / width)], -1)
    blobs = cv2.GaussianBlur(rng.normal(0, 40, (height // 8, width // 8, 3)).astype(np.float32), (0, 0), 2)
    base += cv2.resize(blobs, (width, height))
    for _ in range(6):
        x = int(rng.integers(0, width))
        cv2.line(base, (x, 0), (x, height), tuple(float(v) for v in rng.integers(40, 220, 3)), 3)
    return np.clip(base, 0, 255).astype(np.uint8)


def clip_from_dataset(
    data_root: str | Path, index: int = 0, cfg: ClipConfig | None = None, dataset: str = "vikram_val"
) -> Clip:
    """A clip from the ``index``-th photo+mask of ``data_root/dataset`` (images/*.jpg,
    masks/*.png) over the ``index``-th texture of ``data_root/backgrounds/textures``."""
    from .inference import load_image

    root = Path(data_root)
    images = sorted((root / dataset / "images").glob("*.jpg"))
    textures = sorted((root / "backgrounds" / "textures").glob("*.jpg"))
    if not images or not textures:
        raise FileNotFoundError(f"{root}: need {dataset}/images/*.jpg and backgrounds/textures/*.jpg")
    image = images[index % len(images)]
    mask = cv2.imread(str(root / dataset / "masks" / f"{image.stem}.png"), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise FileNotFoundError(f"{image}: no mask in {root / dataset / 'masks'}")
    background = load_image(textures[(7 * index) % len(textures)])
    cfg = cfg or ClipConfig(seed=index)
    return make_clip(load_image(image), mask, background, cfg)
