"""The training data mix: per-source sampling weights, background-source shares, donor encoders
in training, and image caches of several background folders (real data, tiny subsets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import copy_subset, first_stems
from portraitseg.data.augment import AugmentConfig, BatchAugmenter
from portraitseg.data.cache import build_cache, build_image_cache, load_cache
from portraitseg.train import TrainConfig, Trainer, source_probs

SIZE = 64


@pytest.fixture(scope="module")
def mix_cache(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 ccp_person + 3 eg1800 training pairs at 64 px (folders keep the sources' names)."""
    tmp = tmp_path_factory.mktemp("mix")
    ccp, eg = shared_data / "ccp_person", shared_data / "eg1800"
    sources = [
        (copy_subset(ccp, tmp / "ccp_person", first_stems(ccp, "train.txt", 6)), "train.txt"),
        (copy_subset(eg, tmp / "eg1800", first_stems(eg, "train.txt", 3)), "train.txt"),
    ]
    return build_cache(sources, tmp / "train.npz", SIZE, 90)[0]


def test_source_weights_multiply_uniform_draws(mix_cache: Path) -> None:
    data = load_cache(mix_cache, workers=1)
    assert data.source_names == ["ccp_person", "eg1800"]
    probs = source_probs(data, {"eg1800": 4.0}, shares=False)
    ccp, eg = probs[data.source == 0], probs[data.source == 1]
    assert len(ccp) == 6 and len(eg) == 3
    np.testing.assert_allclose(eg / ccp[0], 4.0, rtol=1e-6)  # 4x a ccp sample's chance
    assert probs.sum() == pytest.approx(1.0)
    shares = source_probs(data, {"eg1800": 0.5, "ccp_person": 0.5}, shares=True)
    assert shares[data.source == 1].sum() == pytest.approx(0.5)  # half the draws from 3 images


def test_source_weights_reject_unknown_and_all_zero(mix_cache: Path) -> None:
    data = load_cache(mix_cache, workers=1)
    with pytest.raises(ValueError, match="unknown source.*eg1801.*ccp_person"):
        source_probs(data, {"eg1801": 2.0}, shares=False)
    with pytest.raises(ValueError, match="not all zero"):
        source_probs(data, {"eg1800": 0.0, "ccp_person": 0.0}, shares=False)


def test_trainer_draws_only_weighted_sources(mix_cache: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        train_cache=[str(mix_cache)], input_size=SIZE, batch_size=3, epochs=1, device="cpu",
        workers=1, progress=False, channels_last=False, ema_decay=0, out_dir=str(tmp_path),
        source_weights={"ccp_person": 0.0},
    )  # fmt: skip
    trainer = Trainer(cfg)
    seen: list[torch.Tensor] = []
    augment = trainer.augmenter

    def recording(images, targets, ignore, gen):
        seen.append(images.clone())
        return augment(images, targets, ignore, gen)

    trainer.augmenter = recording
    trainer.train_epoch(0)
    eg_images = trainer.train_t[0][torch.from_numpy(trainer.train_data.source == 1)]
    drawn = torch.cat(seen)
    assert len(drawn) == 3 * trainer.steps_per_epoch == 9  # an epoch keeps len(data) // batch steps
    for img in drawn:  # every drawn sample is an eg1800 image, never a zero-weight ccp one
        assert any(torch.equal(img, e) for e in eg_images)


def test_background_shares_pick_the_weighted_folder() -> None:
    textures = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    scenes = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    probs = torch.tensor([0.0] * 4 + [0.5] * 2)
    aug = BatchAugmenter(
        AugmentConfig(out_size=8, composite_p=1.0, composite_texture_frac=1.0),
        torch.cat([textures, scenes]),
        probs,
    )
    img = torch.rand(16, 3, 8, 8)
    empty = torch.zeros(16, 1, 8, 8)  # no person: the composite is the background alone
    out, _, _ = aug._composite(img, empty, empty.clone(), torch.Generator().manual_seed(0))
    assert torch.all(out == 1.0)  # only white scenes were drawn


def test_image_cache_of_several_folders(shared_data: Path, tmp_path: Path) -> None:
    bg = shared_data / "backgrounds"
    folders = []
    for name, n in (("textures", 3), ("scenes", 2)):
        dst = tmp_path / name
        dst.mkdir()
        for f in sorted((bg / name).iterdir())[:n]:
            (dst / f.name).write_bytes(f.read_bytes())
        folders.append(dst)
    c = load_cache(build_image_cache(folders, tmp_path / "bg.npz", SIZE), workers=1)
    assert c.source_names == ["textures", "scenes"]
    assert c.images.shape == (5, SIZE, SIZE, 3) and c.targets is None
    assert np.bincount(c.source).tolist() == [3, 2]


def test_init_encoder_loads_a_donor(mix_cache: Path, anchors_dir: Path, tmp_path: Path) -> None:
    from portraitseg.models.donors import encoder_convs

    cfg = TrainConfig(
        train_cache=[str(mix_cache)], input_size=SIZE, batch_size=3, epochs=1, device="cpu",
        workers=1, progress=False, channels_last=False, ema_decay=0, out_dir=str(tmp_path),
        init_encoder=str(anchors_dir / "deeplab_mnv2_dm05_aiseg_513.onnx"),
        model_overrides={"divisor": 4},
    )  # fmt: skip
    trainer = Trainer(cfg)
    stem_bn = encoder_convs(trainer.model.encoder)[0][1]
    assert not torch.allclose(stem_bn.running_var, torch.ones_like(stem_bn.running_var))  # donor's stats
    assert trainer.model.encoder.out_channels[1] == 12


def test_compile_is_refused_on_cpu(mix_cache: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(train_cache=[str(mix_cache)], input_size=SIZE, device="cpu", workers=1,
                      compile=True, out_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(ValueError, match="CUDA-only"):
        Trainer(cfg)
