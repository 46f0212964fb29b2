"""Peer models: person segmenters a user could pick instead of ours, described exactly as the
anchors folder's README does (input size, layout, channel order, normalisation, output)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..locate import source_roots
from .contracts import InputFormat, OutputFormat

ANCHORS_ENV = "PORTRAITSEG_ANCHORS"
# Relative to the working directory, then to the source checkout (locate.source_roots: the repo
# this file sits in, or the folder a non-editable `pip install .` ran from), so any cwd works.
DEFAULT_ANCHORS = Path("..") / "shared" / "anchors"


@dataclass(frozen=True)
class PeerSpec:
    """A peer model in the anchors folder, exactly as its README describes it."""

    name: str
    filename: str
    input: InputFormat
    output: OutputFormat
    description: str

    @property
    def backend(self) -> str:
        return "tflite" if self.filename.endswith(".tflite") else "onnx"


_X255 = {"scale": 1.0 / 255.0}
PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec(
            "mediapipe_selfie_256",
            "mediapipe_selfie_256.tflite",
            InputFormat((256, 256), "NHWC", "RGB", **_X255),
            OutputFormat("probability", "NHWC"),
            "MediaPipe Selfie Segmentation, general (Apache-2.0)",
        ),
        PeerSpec(
            "mediapipe_selfie_landscape_144x256",
            "mediapipe_selfie_landscape_144x256.tflite",
            InputFormat((144, 256), "NHWC", "RGB", **_X255),
            OutputFormat("probability", "NHWC"),
            "MediaPipe Selfie Segmentation, landscape 144x256 (Apache-2.0)",
        ),
        PeerSpec(
            "seed_munet_bilinear_128_uint8",
            "seed_munet_bilinear_128_uint8.tflite",
            InputFormat((128, 128), "NHWC", "RGB", **_X255),
            OutputFormat("probability", "NHWC", flattened=True),
            "original Keras project's Mobile-UNet (MNV2-0.5, bilinear), weight-only uint8 (MIT)",
        ),
        PeerSpec(
            "sinet_320",
            "sinet_320.onnx",
            # SINet's own recipe: BGR, subtract mean, divide by std, then divide by 255.
            InputFormat(
                (320, 320),
                "NCHW",
                "BGR",
                mean=(102.890434, 111.25247, 126.91212),
                std=(62.93292, 62.82138, 66.355705),
                scale=1.0 / 255.0,
            ),
            OutputFormat("logits", "NCHW"),  # 2 channels (bg, person) -> softmax[1]
            "SINet retrained on AISegment+Baidu, 87K params (MIT)",
        ),
        PeerSpec(
            "prisma_net_256",
            "prisma_net_256.onnx",
            InputFormat((256, 256), "NCHW", "RGB", **_X255),
            OutputFormat("probability", "NCHW"),
            "Prisma-Net, 0.9M params (MIT)",
        ),
    )
}
# Peer names are the file stems; the anchors README's short name is accepted too.
PEER_ALIASES = {"mediapipe_selfie_landscape": "mediapipe_selfie_landscape_144x256"}


def anchors_candidates(anchors: str | Path | None = None) -> list[Path]:
    """Where peer models are looked for, in order: the argument, else $PORTRAITSEG_ANCHORS,
    else ../shared/anchors from the working directory, then beside the repo checkout."""
    if anchors is not None:
        return [Path(anchors)]
    if os.environ.get(ANCHORS_ENV):
        return [Path(os.environ[ANCHORS_ENV])]
    return list(dict.fromkeys([DEFAULT_ANCHORS, *(root / DEFAULT_ANCHORS for root in source_roots())]))


def anchors_dir(anchors: str | Path | None = None) -> Path:
    """Peer-model folder: the first of :func:`anchors_candidates` that exists (else the first)."""
    candidates = anchors_candidates(anchors)
    return next((p for p in candidates if p.is_dir()), candidates[0])


def is_peer_name(name: str) -> bool:
    return name in PEERS or name in PEER_ALIASES


def peer_spec(name: str) -> PeerSpec:
    key = PEER_ALIASES.get(name, name)
    if key not in PEERS:
        raise ValueError(f"unknown peer model {name!r}; known: {', '.join(PEERS)}")
    return PEERS[key]


def peer_for_file(path: Path) -> PeerSpec | None:
    """The peer whose file this is (by file name), so a direct path gets its pre/post-processing."""
    return next((p for p in PEERS.values() if p.filename == path.name), None)


def peer_path(spec: PeerSpec, anchors: str | Path | None = None) -> Path:
    candidates = [p / spec.filename for p in anchors_candidates(anchors)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        looked = ", ".join(str(p) for p in candidates)
        raise FileNotFoundError(
            f"{spec.filename}: peer model file not found (looked in {looked}); give --anchors DIR "
            f"or set ${ANCHORS_ENV} to the anchors folder"
        )
    return path
