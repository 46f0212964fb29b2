"""Per-op timing of :mod:`portraitseg.postprocess` at 720p, with fresh arrays vs a reused
:class:`~portraitseg.postprocess.Workspace` (docs/postprocess.md):

    python -m portraitseg.bench.postprocess --repeats 50
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np

from ..postprocess import (
    PostprocessConfig,
    Workspace,
    apply,
    blur,
    composite,
    cutout,
    fast_guided_filter,
    guided_upsample,
    keep_largest,
    morph_close,
    morph_open,
    smoothstep,
    upsample,
)


def _time_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (OpenCV dispatch, workspace buffers)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def _bench_inputs(width: int, height: int, low: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured frame, a low-res person-like probability (a head-and-shoulders blob, two
    specks, a pinhole) and its bilinear upsampling."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    prob = np.zeros((low, low), np.float32)
    cv2.ellipse(prob, (low // 2, low), (low // 3, low // 2), 0, 0, 360, 1.0, -1)
    cv2.circle(prob, (low // 2, low // 4), low // 8, 1.0, -1)
    cv2.circle(prob, (low // 10, low // 10), 2, 1.0, -1)
    cv2.circle(prob, (low - low // 10, low // 5), 1, 1.0, -1)
    prob[low * 3 // 4, low // 2] = 0.0
    prob = cv2.GaussianBlur(prob, (0, 0), 1.5)
    return image, prob, upsample(prob, (height, width))


def benchmark(width: int = 1280, height: int = 720, low: int = 224, repeats: int = 50,
              threads: int = 1) -> list[tuple[str, float, float]]:
    """(op, median ms with fresh arrays, median ms with a reused :class:`Workspace`)."""
    cv2.setNumThreads(threads)
    image, prob, alpha = _bench_inputs(width, height, low)
    bg_image = cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)[::-1].copy()
    full = PostprocessConfig(guided=True, keep_largest=True, open_size=5, close_size=5, blur_size=9,
                             smoothstep=(0.3, 0.7))
    ops: list[tuple[str, Callable[[Workspace | None], object]]] = [
        (f"upsample bilinear {low}->{height}p", lambda ws: upsample(prob, (height, width), ws)),
        (f"guided upsample (gray guide, r=2 at {low})", lambda ws: guided_upsample(prob, image, ws=ws)),
        ("fast guided filter (full-res src, s=4, r=8)",
         lambda ws: fast_guided_filter(image, alpha, 8, 1e-3, 4, ws)),
        ("keep largest component (+6 px margin)", lambda ws: keep_largest(alpha, 0.25, 0.5, 6, ws)),
        ("morph open 5x5", lambda ws: morph_open(alpha, 5, ws)),
        ("morph close 5x5", lambda ws: morph_close(alpha, 5, ws)),
        ("blur 9x9 box", lambda ws: blur(alpha, 9, ws)),
        ("smoothstep", lambda ws: smoothstep(alpha, 0.3, 0.7, ws)),
        ("composite colour", lambda ws: composite(image, alpha, (0, 255, 0), ws)),
        ("composite image (640x480 -> cover)", lambda ws: composite(image, alpha, bg_image, ws)),
        ("composite blur", lambda ws: composite(image, alpha, "blur", ws)),
        ("cutout RGBA", lambda ws: cutout(image, alpha, ws)),
        ("apply(): guided+largest+open+close+blur+smoothstep", lambda ws: apply(prob, image, full, ws)),
    ]
    rows = []
    for name, fn in ops:
        fresh = _time_ms(lambda fn=fn: fn(None), repeats)
        ws = Workspace()
        reused = _time_ms(lambda fn=fn, ws=ws: fn(ws), repeats)
        rows.append((name, fresh, reused))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m portraitseg.bench.postprocess",
                                description="Time each post-processing op.")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--low", type=int, default=224, help="side of the low-res probability map")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads (1 = one core)")
    args = p.parse_args(argv)
    rows = benchmark(args.width, args.height, args.low, args.repeats, args.threads)
    print(f"{args.width}x{args.height}, {args.threads} OpenCV thread(s), median of {args.repeats} runs\n")
    print("| op | ms, fresh arrays | ms, reused Workspace |")
    print("|---|---:|---:|")
    for name, fresh, reused in rows:
        print(f"| {name} | {fresh:.2f} | {reused:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
