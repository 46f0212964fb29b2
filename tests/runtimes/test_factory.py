"""open_model: one factory, and "default" means one thing everywhere (the fastest installed
backend of the bundled model)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from portraitseg.runtimes import (
    DEFAULT_ONNX,
    DEFAULT_TFLITE,
    OnnxRuntime,
    TFLiteRuntime,
    TorchRuntime,
    factory,
    open_model,
    resolve_backend,
)

ASSET = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


def test_auto_is_tflite_when_litert_is_installed_else_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend("auto") == ("tflite" if HAS_LITERT else "onnx")
    monkeypatch.setattr(factory, "_installed", lambda module: module == "onnxruntime")
    assert resolve_backend("auto") == "onnx"
    assert isinstance(open_model("default", threads=1), OnnxRuntime)
    monkeypatch.setattr(factory, "_installed", lambda module: False)
    assert resolve_backend("auto") == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorrt")


@pytest.mark.skipif(not HAS_LITERT, reason="LiteRT runtime not installed: pip install '.[tflite]'")
def test_default_opens_the_bundled_tflite() -> None:
    rt = open_model("default", threads=1)
    assert isinstance(rt, TFLiteRuntime) and rt.path == DEFAULT_TFLITE and rt.name == "default"


def test_explicit_backends_and_files() -> None:
    onnx_rt = open_model("default", "onnx", threads=1)
    assert isinstance(onnx_rt, OnnxRuntime) and onnx_rt.path == DEFAULT_ONNX
    by_path = open_model(DEFAULT_ONNX, threads=1, name="shipped")
    assert isinstance(by_path, OnnxRuntime) and by_path.name == "shipped"
    assert by_path.input_size == onnx_rt.input_size == (224, 224)  # read from the file, not assumed


def test_eval_and_predict_resolve_default_the_same_way() -> None:
    from portraitseg import Segmenter

    assert type(Segmenter(threads=1).runtime) is type(open_model("default", threads=1))


def test_in_memory_model_and_checkpoint_open_as_torch() -> None:
    from portraitseg.checkpoint import load_model

    rt = open_model(load_model("default"), input_size=160)
    assert isinstance(rt, TorchRuntime) and rt.input_size == (160, 160)
    image = np.zeros((90, 120, 3), np.uint8)
    assert rt.prob(image).shape == (90, 120)
    assert isinstance(open_model("default", "torch"), TorchRuntime)


def test_inference_backends_do_not_import_torch() -> None:
    code = ("import sys; from portraitseg.runtimes import open_model; "
            "[open_model('default', b, threads=1) for b in ('auto', 'onnx')]; "
            "from portraitseg.pipeline import Pipeline; import portraitseg.video, portraitseg.server.engine; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_peers_found_beside_a_non_editable_install(tmp_path, monkeypatch) -> None:
    """A non-editable ``pip install .`` (as CI does) puts the package in site-packages: the peer
    folder is then looked for beside the folder pip ran in (PEP 610 direct_url.json)."""
    from portraitseg import locate
    from portraitseg.runtimes import peers

    repo = tmp_path / "work" / "repo"
    anchors = tmp_path / "work" / "shared" / "anchors"
    anchors.mkdir(parents=True)
    repo.mkdir()
    (anchors / "sinet_320.onnx").write_bytes(b"x")
    site = tmp_path / "venv" / "site-packages" / "portraitseg" / "locate.py"
    monkeypatch.setattr(locate, "__file__", str(site))
    monkeypatch.setattr(locate, "installed_from", lambda: repo)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PORTRAITSEG_ANCHORS", raising=False)
    assert peers.peer_path(peers.peer_spec("sinet_320")).resolve() == (anchors / "sinet_320.onnx").resolve()
