"""One colour syntax (issue 18): the parser, and every CLI/API entry that takes a background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from portraitseg.cli import main
from portraitseg.colour import parse_colour, parse_colour_or_blur
from portraitseg.inference import parse_background
from portraitseg.video.effects import parse_effect

ASSETS = Path(__file__).resolve().parents[1] / "src" / "portraitseg" / "assets"
BLUE = (51, 102, 255)  # 0x3366ff


@pytest.mark.parametrize("text", ["#3366ff", "3366ff", "3366FF", "51,102,255", " 51, 102 ,255 ",
                                  "rgb(51,102,255)", "#36f"])
def test_every_form_of_one_colour(text: str) -> None:
    assert parse_colour(text) == BLUE


def test_names_tuples_and_numpy_ints() -> None:
    assert parse_colour("green") == (0, 128, 0)
    assert parse_colour("Lime") == (0, 255, 0)
    assert parse_colour((1, 2, 3)) == (1, 2, 3)
    assert parse_colour(np.array([1, 2, 3], np.uint8)) == (1, 2, 3)
    assert all(type(v) is int for v in parse_colour(np.array([1, 2, 3], np.uint8)))


@pytest.mark.parametrize("bad", ["3366f", "notacolour", "256,0,0", "1,2", "#12345g", "", "blur"])
def test_bad_text_is_one_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a colour") as info:
        parse_colour(bad)
    assert "\n" not in str(info.value) and repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [(1, 2), (1, 2, 3, 4), (0, 0, 256), (-1, 0, 0), (0.5, 0, 0), (True, 0, 0), 7])
def test_bad_tuples_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="is not a colour"):
        parse_colour(bad)  # type: ignore[arg-type]


def test_colour_or_blur_never_reads_files(tmp_path: Path) -> None:
    assert parse_colour_or_blur("blur") == "blur"
    assert parse_colour_or_blur("3366ff") == BLUE
    path = tmp_path / "bg.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError, match="is not a colour"):
        parse_colour_or_blur(str(path))


def test_background_takes_the_same_forms_and_files_win(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_background("51,102,255") == BLUE
    assert parse_background((51, 102, 255)) == BLUE
    with pytest.raises(ValueError, match="is not a colour"):
        parse_background((300, 0, 0))
    # A file named like a colour is the file (an existing file wins).
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (5, 4), (9, 9, 9)).save("3366ff", format="PNG")
    assert parse_background("3366ff").shape == (4, 5, 3)
    with pytest.raises(ValueError) as info:
        parse_background("missing.jpg")
    assert "'missing.jpg' is not an image file, a colour (#rrggbb" in str(info.value)


def test_video_and_webcam_effects_take_the_same_forms() -> None:
    # video and webcam both turn --background into an effect through parse_effect.
    assert parse_effect("3366ff") == BLUE
    assert parse_effect("51,102,255") == BLUE


@pytest.mark.parametrize("background", ["3366ff", "51,102,255", "#3366ff", "rgb(51,102,255)"])
def test_predict_composites_on_every_form(background: str, tmp_path: Path) -> None:
    """The issue's reproduction: `predict --background 3366ff` (and r,g,b) exited 2."""
    out = tmp_path / "out"
    args = ["predict", str(ASSETS / "astronaut.jpg"), "-o", str(out), "--output", "composite",
            "--output", "mask", "--background", background, "--no-progress", "--composite-format", "png"]
    assert main(args) == 0
    comp = np.asarray(Image.open(out / "astronaut.composite.png").convert("RGB")).astype(int)
    alpha = np.asarray(Image.open(out / "astronaut.mask.png"))
    assert (alpha == 0).sum() > 1000
    assert np.abs(comp[alpha == 0] - BLUE).max() == 0  # pure background colour where the mask is 0


def test_predict_bad_colour_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["predict", str(ASSETS / "astronaut.jpg"), "-o", str(tmp_path), "--output", "composite",
            "--background", "12,34", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["portraitseg predict: error: background '12,34' is not an image file, a colour "
                   "(#rrggbb, rrggbb, r,g,b or a colour name) or 'blur'"]
    assert not list(tmp_path.iterdir())
