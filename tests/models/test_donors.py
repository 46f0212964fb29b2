"""Donor encoders: the converted encoder computes the donor's features on a real photo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from portraitseg.models import MobileUNet, MobileUNetConfig
from portraitseg.models.donors import encoder_convs, load_donor_encoder
from portraitseg.models.mobilenetv2 import MobileNetV2Encoder

PHOTO = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


def photo(size: int) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def stride2_units(encoder: MobileNetV2Encoder) -> list:
    return [u for u in encoder_convs(encoder) if u[0].stride == (2, 2)]


def test_tflite_donor_matches_seed_features(anchors_dir: Path, two_torch_threads) -> None:
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    path = anchors_dir / "seed_munet_bilinear_128_uint8.tflite"
    enc = load_donor_encoder(MobileNetV2Encoder(0.5), path).eval()
    # Emulate Keras' padding (bottom/right only before stride-2 convs) so every pixel compares;
    # the stem pads with -1, which is the donor's 0 in our signed input.
    for i, unit in enumerate(stride2_units(enc)):
        unit[0].padding = (0, 0)
        value = -1.0 if i == 0 else 0.0
        unit.register_forward_pre_hook(lambda _m, args, v=value: (F.pad(args[0], (0, 1, 0, 1), value=v),))
    x = photo(128)
    interp = Interpreter(str(path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x[None])
    interp.invoke()
    by_name = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    signed = torch.from_numpy(x.transpose(2, 0, 1))[None] * 2 - 1
    with torch.no_grad():
        block1 = enc.stages[1][0](enc.stages[0](enc.stem(signed)))
        last = enc(signed)[-1]
    # Up to block 1 the donor's layers are all float: exact. From block 2 on, its hybrid int8
    # kernels also quantize their inputs at run time, which costs it ~1%.
    for feat, name, shape, tol in [
        (block1, "block_1_project_BN/BiasAdd", (16, 32, 32), 1e-4),
        (last, "block_16_project_BN/BiasAdd", (160, 4, 4), 0.03),
    ]:
        donor = interp.get_tensor(by_name[name])[0].transpose(2, 0, 1)
        ours = feat[0].numpy()
        assert ours.shape == donor.shape == shape
        err = np.abs(ours - donor).max() / np.abs(donor).max()
        assert err < tol, (name, err)


# The copy from the donor's read-only arrays printed torch's "non-writable NumPy array" warning.
@pytest.mark.filterwarnings("error:The given NumPy array is not writable")
def test_onnx_donor_matches_deeplab_features(anchors_dir: Path, two_torch_threads) -> None:
    import onnx
    import onnxruntime as ort

    path = anchors_dir / "deeplab_mnv2_dm05_aiseg_513.onnx"
    enc = load_donor_encoder(MobileNetV2Encoder(0.5, divisor=4), path).eval()
    assert enc.out_channels == (8, 12, 16, 48, 160)  # TF-slim's counts at width 0.5
    # The donor runs its last two downsampling blocks at stride 1 and dilates the convs after
    # them (output stride 8): replay that geometry to compare every pixel.
    for unit in stride2_units(enc)[3:]:
        unit[0].stride = (1, 1)
    for unit in encoder_convs(enc):
        d = unit.donor_dilation
        unit[0].dilation, unit[0].padding = (d, d), (d * (unit[0].kernel_size[0] // 2),) * 2
    assert {u.donor_dilation for u in encoder_convs(enc)} == {1, 2, 4}
    model = onnx.load(str(path))
    feature = "MobilenetV2/expanded_conv_16/project/BatchNorm/FusedBatchNormV3:0"
    model.graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = photo(513).transpose(2, 0, 1)[None] * 2 - 1
    donor = sess.run([feature], {sess.get_inputs()[0].name: x})[0][0]
    with torch.no_grad():
        ours = enc(torch.from_numpy(x))[-1][0].numpy()
    assert ours.shape == donor.shape == (160, 65, 65)
    err = np.abs(ours - donor).max() / np.abs(donor).max()
    assert err < 1e-3, err


def test_donor_initialises_a_full_model(anchors_dir: Path) -> None:
    model = MobileUNet(MobileUNetConfig(divisor=4))
    before = model.decoder.blocks[0].up.conv.weight.clone()
    load_donor_encoder(model.encoder, anchors_dir / "deeplab_mnv2_dm05_aiseg_513.onnx")
    assert torch.equal(model.decoder.blocks[0].up.conv.weight, before)  # only the encoder changes
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_donor_shape_mismatch_names_the_fix(anchors_dir: Path) -> None:
    with pytest.raises(ValueError, match="divisor=4"):
        load_donor_encoder(MobileNetV2Encoder(0.5), anchors_dir / "deeplab_mnv2_dm05_aiseg_513.onnx")
