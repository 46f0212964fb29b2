"""Export fixtures: expensive exports are made once per session and shared by the tests that
only read them (an int8 export calibrates and scores two granularities; repeating it per test
was the slowest part of the suite)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from portraitseg import export as ex
from portraitseg.models import create_model

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PORTRAITSEG_SHARED", REPO.parent / "shared"))
VIKRAM = SHARED / "data" / "vikram_val"
SIZE = 128  # small inputs keep the suite fast; the graph is the same at any size


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so folding them is actually exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.3, 0.3, generator=gen)
    return model.eval()


def need_vikram() -> Path:
    if not (VIKRAM / "images").is_dir():
        pytest.skip(f"real validation images not found at {VIKRAM} (set PORTRAITSEG_SHARED)")
    return VIKRAM


@dataclass
class Exported:
    """A written export and what export_model reported about it."""

    path: Path
    result: ex.ExportResult


@pytest.fixture(scope="session")
def model() -> nn.Module:
    """A random-init Mobile-UNet at SIZE with randomised BatchNorm (tests must not modify it)."""
    torch.manual_seed(0)
    return randomise_bn(create_model("mobile-unet-050-bilinear", input_size=SIZE))


def _export(model: nn.Module, folder: Path, name: str, cfg: ex.ExportConfig) -> Exported:
    path = folder / name
    return Exported(path, ex.export_model(model, path, cfg))


@pytest.fixture(scope="session")
def fp16_onnx(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    vikram = need_vikram()
    cfg = ex.ExportConfig(precision="fp16", verify_data=str(vikram), verify_count=4)
    return _export(model, tmp_path_factory.mktemp("fp16"), "m16.onnx", cfg)


@pytest.fixture(scope="session")
def int8_onnx(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """int8 with both granularities scored (auto): one export serves the agreement and the
    granularity-choice tests."""
    vikram = need_vikram()
    cfg = ex.ExportConfig(precision="int8", calib_data=str(vikram), calib_count=16, verify_data=str(vikram),
                          verify_count=4)
    return _export(model, tmp_path_factory.mktemp("int8"), "m8.onnx", cfg)


@pytest.fixture(scope="session")
def default_model() -> nn.Module:
    from portraitseg.checkpoint import bundled_weights_path, load_model

    try:
        bundled_weights_path()
    except FileNotFoundError:
        pytest.skip("bundled default weights not present yet")
    return load_model("default")


@pytest.fixture(scope="session")
def default_int8_onnx(default_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    vikram = need_vikram()
    cfg = ex.ExportConfig(precision="int8", calib_data=str(vikram), calib_count=16, verify_data=str(vikram),
                          verify_count=8)
    return _export(default_model, tmp_path_factory.mktemp("d8"), "d8.onnx", cfg)


@pytest.fixture(scope="session")
def default_fp16_onnx(default_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    cfg = ex.ExportConfig(precision="fp16", verify_data=str(need_vikram()), verify_count=8)
    return _export(default_model, tmp_path_factory.mktemp("d16"), "d16.onnx", cfg)
