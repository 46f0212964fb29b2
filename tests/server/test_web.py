"""Browser test of the web app: headless Debian chromium via Playwright, against the page served
by ``create_app`` on 127.0.0.1 (random port).

The fake camera plays a .y4m made at test time from a real vikram_val photo, so the in-browser
mask can be checked against the photo's ground truth, and the rendered canvas against the mask
(pure green background where the mask is 0, the photo where it is 1).

Needs: ``apt-get install -y chromium`` (/usr/bin/chromium), ``pip install playwright`` (no
``playwright install``: the system chromium is used) and ``web/build.sh`` (vendored
onnxruntime-web). Skips with a message naming what is missing. Artifacts (screenshots, measured
fps) go to $PORTRAITSEG_ARTIFACTS or a pytest tmp folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
CHROMIUM = Path(os.environ.get("PORTRAITSEG_CHROMIUM", "/usr/bin/chromium"))
GREEN = np.array([0, 255, 0])
FRAME_HW = (366, 552)  # even sizes (4:2:0), the vikram photos' 3:2 aspect

pytest.importorskip("fastapi", reason="web test needs `pip install portraitseg[server]`")
uvicorn = pytest.importorskip("uvicorn", reason="web test needs `pip install portraitseg[server]`")
sync_api = pytest.importorskip("playwright.sync_api", reason="web test needs `pip install playwright`")
if not CHROMIUM.is_file():
    pytest.skip(f"web test needs chromium at {CHROMIUM} (apt-get install -y chromium)",
                allow_module_level=True)
if not (WEB / "vendor" / "ort.min.mjs").is_file():
    pytest.skip("web/vendor missing: run web/build.sh (npm install onnxruntime-web)", allow_module_level=True)

from PIL import Image  # noqa: E402

from portraitseg.server import ServerConfig, create_app  # noqa: E402


def write_y4m(photo: Path, out: Path, frames: int = 30) -> np.ndarray:
    """A still-photo video in YUV4MPEG2 (4:2:0, JPEG full-range, which is what PIL's YCbCr is);
    returns the RGB frame the browser should see."""
    h, w = FRAME_HW
    rgb = Image.open(photo).convert("RGB").resize((w, h), Image.BILINEAR)
    y, cb, cr = (np.asarray(c) for c in rgb.convert("YCbCr").split())
    sub = [np.asarray(Image.fromarray(c).resize((w // 2, h // 2), Image.BILINEAR)) for c in (cb, cr)]
    frame = b"FRAME\n" + y.tobytes() + sub[0].tobytes() + sub[1].tobytes()
    out.write_bytes(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode() + frame * frames)
    return np.asarray(rgb)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def truth_224(vikram: Path, stem: str) -> np.ndarray:
    """Ground truth stretched to the model's 224x224, like the page's mask."""
    m = Image.open(vikram / "masks" / f"{stem}.png").convert("L").resize((224, 224), Image.BILINEAR)
    return np.asarray(m) >= 128


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("PORTRAITSEG_ARTIFACTS")
    path = Path(env) / "web" if env else tmp_path_factory.mktemp("web-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(ServerConfig(worker_threads=1, web_dir=WEB))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def camera(vikram: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    y4m = tmp_path_factory.mktemp("camera") / "vikram_001.y4m"
    return y4m, write_y4m(vikram / "images" / "vikram_001.jpg", y4m)


@pytest.fixture(scope="module")
def browser(camera: tuple[Path, np.ndarray]):
    args = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera[0]}"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield browser
        browser.close()


def open_page(browser, url: str, errors: list[str], viewport: tuple[int, int] = (1000, 800)):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function("window.__ps && (window.__ps.ready || window.__ps.error)", timeout=60_000)
    assert page.evaluate("window.__ps.error") is None, page.evaluate("window.__ps.error")
    return page


def snapshot(page) -> tuple[np.ndarray, np.ndarray]:
    snap = page.evaluate("window.__ps.snapshot()")
    mask = np.asarray(snap["mask"], np.float32).reshape(224, 224)
    pixels = np.asarray(snap["pixels"], np.int32).reshape(224, 224, 4)[..., :3]
    return mask, pixels


def test_camera_background_replacement(browser, base_url: str, camera, vikram: Path, artifacts: Path) -> None:
    errors: list[str] = []
    page = open_page(browser, f"{base_url}/?autostart=1&bg=color&color=00ff00&ema=0.5", errors)
    page.wait_for_function("window.__ps.frames >= 20", timeout=60_000)
    # Page fps over a fixed window, after warm-up (first frames pay for WASM compilation).
    f0, i0 = page.evaluate("[window.__ps.frames, window.__ps.inferences]")
    t0 = time.monotonic()
    page.wait_for_timeout(5000)
    f1, t1 = page.evaluate("window.__ps.frames"), time.monotonic()
    fps = (f1 - f0) / (t1 - t0)
    model_fps = (page.evaluate("window.__ps.inferences") - i0) / (t1 - t0)
    ms = page.evaluate("window.__ps.avgMs")
    backend = page.evaluate("window.__ps.backend")
    mask, pixels = snapshot(page)
    page.screenshot(path=str(artifacts / "camera.png"))
    result = {"fps": fps, "model_fps": model_fps, "ms": ms, "backend": backend, "frames": f1}
    (artifacts / "camera.json").write_text(json.dumps(result, indent=2))
    print(f"\nweb camera: {result}, artifacts {artifacts}")
    assert not errors, errors

    person = mask > 0.5
    assert iou(person, truth_224(vikram, "vikram_001")) > 0.7
    # The canvas follows the mask: green where the mask is ~0, the camera frame where ~1.
    frame = np.asarray(Image.fromarray(camera[1]).resize((224, 224), Image.BILINEAR)).astype(np.int32)
    bg, fg = mask < 0.02, mask > 0.98
    assert bg.sum() > 1000 and fg.sum() > 1000
    assert np.abs(pixels[bg] - GREEN).mean() < 12
    assert np.abs(pixels[fg] - frame[fg]).mean() < 20
    assert np.abs(pixels[fg] - GREEN).sum(axis=1).mean() > 150
    # Liveness only: speed is a benchmark figure (docs/web.md), not a unit-test gate.
    assert model_fps > 1, f"the mask is not being updated live ({model_fps:.1f} inferences/s)"
    assert fps > 1, f"the page is not rendering frames ({fps:.1f} fps)"
    page.close()


def test_photo_upload_and_cutout_download(browser, base_url: str, vikram: Path, artifacts: Path,
                                          tmp_path: Path) -> None:
    errors: list[str] = []
    page = open_page(browser, f"{base_url}/?bg=color&color=00ff00", errors)
    photo = vikram / "images" / "vikram_002.jpg"
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("window.__ps.photoName === 'vikram_002.jpg'", timeout=60_000)
    mask, pixels = snapshot(page)
    assert iou(mask > 0.5, truth_224(vikram, "vikram_002")) > 0.7
    assert np.abs(pixels[mask < 0.02] - GREEN).mean() < 12
    page.screenshot(path=str(artifacts / "photo.png"))

    with page.expect_download(timeout=30_000) as info:
        page.click("#download")
    saved = tmp_path / "cutout.png"
    info.value.save_as(saved)
    shutil.copy(saved, artifacts / "cutout.png")
    cut = Image.open(io.BytesIO(saved.read_bytes()))
    assert cut.mode == "RGBA" and cut.size == Image.open(photo).size
    alpha = np.asarray(cut)[..., 3]
    truth = np.asarray(Image.open(vikram / "masks" / "vikram_002.png").convert("L")) >= 128
    assert iou(alpha >= 128, truth) > 0.7
    assert not errors, errors
    page.close()


# --------------------------------------------------------------------------- first screen (issue 18)


def box(page, selector: str) -> dict[str, float]:
    b = page.locator(selector).bounding_box()
    assert b is not None, f"{selector} is not displayed"
    return b


def in_viewport(b: dict[str, float], w: int, h: int) -> bool:
    return b["x"] >= 0 and b["y"] >= 0 and b["x"] + b["width"] <= w + 0.5 and b["y"] + b["height"] <= h + 0.5


def canvas_fits(page, w: int, h: int, aspect: float) -> None:
    b = box(page, "#output")
    assert in_viewport(b, w, h), f"canvas {b} is not inside the {w}x{h} window"
    assert abs(b["width"] / b["height"] - aspect) < 0.02, f"canvas {b}: aspect not {aspect:.3f}"


@pytest.mark.parametrize("viewport", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_first_screen_is_the_sample_photo_segmented(browser, base_url: str, artifacts: Path,
                                                    viewport: tuple[int, int]) -> None:
    """Before issue 18 the page opened on a large black canvas with no hint."""
    errors: list[str] = []
    page = open_page(browser, base_url + "/", errors, viewport)
    page.wait_for_function("window.__ps.photoName === 'sample.jpg'", timeout=60_000)
    mask, _ = snapshot(page)
    # The same photo through the Python pipeline, at the browser mask's 224x224.
    from portraitseg.inference import Segmenter

    sample = WEB / "sample.jpg"
    python = Segmenter(backend="onnx", threads=1).mask(str(sample))
    python_224 = np.asarray(Image.fromarray(python).resize((224, 224), Image.BILINEAR)) > 0.5
    assert 0.15 < (mask > 0.5).mean() < 0.85
    assert iou(mask > 0.5, python_224) > 0.85
    w, h = viewport
    canvas_fits(page, w, h, 1.0)  # the 512x512 sample
    for selector in ("#camera", "#photo-label", "#hint"):
        assert page.locator(selector).is_visible(), selector
        assert in_viewport(box(page, selector), w, h), f"{selector} is below the fold at {w}x{h}"
    assert page.locator("#camera").is_enabled()
    page.screenshot(path=str(artifacts / f"web-{w}x{h}.png"))
    assert not errors, errors
    page.close()


def test_portrait_fits_the_window(browser, base_url: str, tmp_path: Path) -> None:
    """A 384x512 portrait was scaled to the column width, past a 900-px-high window."""
    errors: list[str] = []
    page = open_page(browser, base_url + "/", errors, (1280, 900))
    portrait = tmp_path / "portrait.jpg"
    Image.open(WEB / "sample.jpg").crop((64, 0, 448, 512)).save(portrait)
    page.set_input_files("#photo", str(portrait))
    page.wait_for_function("window.__ps.photoName === 'portrait.jpg'", timeout=60_000)
    canvas_fits(page, 1280, 900, 384 / 512)
    assert box(page, "#output")["height"] > 600  # fitted, not left small
    page.set_viewport_size({"width": 1000, "height": 600})  # the window shrinks: the picture follows
    page.wait_for_timeout(200)
    canvas_fits(page, 1000, 600, 384 / 512)
    assert not errors, errors
    page.close()


def test_image_background_before_choosing_one(browser, base_url: str, artifacts: Path) -> None:
    """Choosing "image" before uploading one showed the blur with a green glow at its edges
    (the previous colour frame showing through the blur's transparent border)."""
    errors: list[str] = []
    page = open_page(browser, f"{base_url}/?bg=color&color=00ff00", errors, (1280, 900))
    page.wait_for_function("window.__ps.photoName === 'sample.jpg'", timeout=60_000)
    page.select_option("#bg", "image")
    page.wait_for_timeout(300)
    assert page.locator("#bg-hint").is_visible() and page.locator("#bgimage-label").is_visible()
    assert not page.locator("#color").is_visible()
    snap = page.evaluate("window.__ps.snapshot()")
    rgba = np.asarray(snap["pixels"], np.int32).reshape(224, 224, 4)
    mask = np.asarray(snap["mask"], np.float32).reshape(224, 224)
    assert (rgba[..., 3] == 255).all()  # no see-through border
    r, g, b = rgba[..., 0], rgba[..., 1], rgba[..., 2]
    green = (g > r + 60) & (g > b + 60)
    assert green.mean() < 0.002, f"{green.mean():.1%} green pixels"
    # It is the blur: the same pixels as the blur background.
    page.select_option("#bg", "blur")
    page.wait_for_timeout(300)
    blur = np.asarray(page.evaluate("window.__ps.snapshot()")["pixels"], np.int32).reshape(224, 224, 4)
    bg = mask < 0.02
    assert bg.sum() > 1000 and np.abs(blur[bg] - rgba[bg]).mean() < 2
    page.screenshot(path=str(artifacts / "image-background-pending.png"))
    assert not errors, errors
    page.close()
