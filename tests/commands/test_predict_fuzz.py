"""The seeded corrupt-image corpus (``tests/fuzz_corpus.py``) through ``portraitseg predict``:
one line per bad file, the batch goes on, every good file is written, exit code 1."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from fuzz_corpus import corpus, good_samples
from portraitseg.cli import main

ASTRONAUT = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's TIFF reader warns on corrupt tags
def test_predict_over_the_fuzz_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    bad, good = corpus(), good_samples()
    for s in bad + good:
        (folder / s.filename).write_bytes(s.data)
    shutil.copy2(ASTRONAUT, folder / "astronaut.jpg")
    total = len(bad) + len(good) + 1

    assert main(["predict", str(folder), "-o", str(out), "--no-progress", "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    m = re.search(r"(\d+) image\(s\) done, (\d+) failed", err)
    assert m, err[-500:]
    done, failed = int(m.group(1)), int(m.group(2))
    assert done + failed == total and failed > len(bad) // 2
    # Every failure is one line naming its file; no file is reported twice.
    named = [line for line in err.splitlines() if str(folder) in line]
    assert len(named) == failed == len({line.split(":")[0] for line in named}), named[:5]
    # The batch went on: each intact file (and every corrupt one that still decodes) was written.
    for s in [*good, *bad]:
        reported = any(s.filename in line for line in named)
        assert (out / f"{s.name}.mask.png").is_file() is not reported, s.name
    with Image.open(out / "astronaut.mask.png") as mask, Image.open(ASTRONAUT) as photo:
        assert mask.size == photo.size
    assert not list(out.rglob("*.tmp"))
