"""Finding a user's labelled images: our layout (0/255, 0/1, alpha), pairs by name, bad files
reported, the held-out split, and the caches built from what was found."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitseg.data import DataError, FolderDataset
from portraitseg.finetune.caches import cached, pick_replay, replay_count, write_split
from portraitseg.finetune.discover import discover, find_pairs, split_off


def person(h: int = 48, w: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like image (noise + a skin-coloured ellipse) and its 0/255 mask."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2 + 4), (w // 4, h // 3), 0, 0, 360, 255, -1)
    img[mask > 0] = (140, 160, 200)
    return img, mask


def layout(root: Path, n: int, scale: int = 255, target: str = "masks") -> Path:
    """Our layout; ``scale=1`` writes 0/1 masks."""
    (root / "images").mkdir(parents=True)
    (root / target).mkdir()
    for i in range(n):
        img, mask = person(seed=i)
        cv2.imwrite(str(root / "images" / f"s{i}.jpg"), img)
        cv2.imwrite(str(root / target / f"s{i}.png"), mask // 255 * scale)
    return root


def test_layout_folder_is_used_in_place(tmp_path: Path) -> None:
    root = layout(tmp_path / "mine", 3)
    found = discover([root], tmp_path / "stage")
    (source,) = found.sources
    assert source.root == root and not source.staged
    assert source.stems == ["s0", "s1", "s2"] and source.given_split is None
    assert found.problems == []


def test_layout_with_its_own_split(tmp_path: Path) -> None:
    root = layout(tmp_path / "mine", 4)
    (root / "train.txt").write_text("s0\ns1\ns2\n")
    (root / "val.txt").write_text("s3\n")
    (source,) = discover([root], tmp_path / "stage").sources
    assert source.given_split == (["s0", "s1", "s2"], ["s3"])


@pytest.mark.parametrize("scale", [255, 1])
def test_masks_0_255_and_0_1_give_the_same_targets(tmp_path: Path, scale: int) -> None:
    """0/1 masks (other tools' exports) must not become all background in the cache."""
    root = layout(tmp_path / f"m{scale}", 2, scale=scale)
    (source,) = discover([root], tmp_path / "stage").sources
    split = write_split(tmp_path / "all.txt", source.stems)
    result = cached([(root, split)], tmp_path / "c.npz", 64, 90)
    from portraitseg.data.cache import load_cache

    targets = load_cache(result.path, 1).targets
    assert targets.max() == 255 and 0.15 < (targets > 127).mean() < 0.5


def test_pairs_by_name_are_linked_into_our_layout(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    img, mask = person()
    cv2.imwrite(str(src / "a.jpg"), img)
    cv2.imwrite(str(src / "a_mask.png"), mask)  # x.jpg + x_mask.png
    cv2.imwrite(str(src / "b.jpg"), img)
    cv2.imwrite(str(src / "b.png"), mask)  # x.jpg + x.png
    cv2.imwrite(str(src / "sub" / "a.jpg"), img)  # same stem in a sub-folder: another sample
    cv2.imwrite(str(src / "sub" / "a_mask.png"), mask // 255)  # 0/1
    found = discover([src], tmp_path / "stage")
    (source,) = found.sources
    assert source.staged and source.root == tmp_path / "stage" / "photos"
    assert source.stems == ["a", "b", "sub__a"] and found.problems == []
    ds = FolderDataset(source.root)
    samples = {s.name: s for s in ds}
    assert set(samples) == {"a", "b", "sub__a"}
    for s in samples.values():  # the user's files, read through the links; 0/1 read as 0/1
        assert s.image.shape == (48, 40, 3) and np.array_equal(s.target, (mask > 0).astype(np.float32))
    assert (source.root / "images" / "a.jpg").resolve() == (src / "a.jpg").resolve()


def test_bad_files_are_reported_and_left_out(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    img, mask = person()
    cv2.imwrite(str(src / "good.jpg"), img)
    cv2.imwrite(str(src / "good.png"), mask)
    cv2.imwrite(str(src / "lonely.jpg"), img)  # no mask
    cv2.imwrite(str(src / "orphan_mask.png"), mask)  # no image
    (src / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    pairs, problems = find_pairs(src)
    assert list(pairs) == ["good"]
    assert len(problems) == 2
    assert any(p.startswith(str(src / "lonely.jpg")) and "no mask" in p for p in problems)
    assert any(p.startswith(str(src / "orphan_mask.png")) and "without an image" in p for p in problems)


def test_layout_image_without_mask_is_reported(tmp_path: Path) -> None:
    root = layout(tmp_path / "mine", 2)
    (root / "masks" / "s1.png").unlink()
    found = discover([root], tmp_path / "stage")
    assert found.sources[0].stems == ["s0"]
    assert found.problems == [f"{root / 'images' / 's1.jpg'}: no masks/s1.png for this image; left out"]


def test_unreadable_pair_is_skipped_by_the_cache_and_reported(tmp_path: Path) -> None:
    root = layout(tmp_path / "mine", 3)
    (root / "images" / "s1.jpg").write_bytes(b"not a jpeg")
    (source,) = discover([root], tmp_path / "stage").sources
    result = cached([(root, write_split(tmp_path / "all.txt", source.stems))], tmp_path / "c.npz", 64, 90)
    assert len(result.skipped) == 1 and str(root / "images" / "s1.jpg") in result.skipped[0]


def test_missing_or_empty_folder_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        discover([tmp_path / "nope"], tmp_path / "stage")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no labelled images found"):
        discover([tmp_path / "empty"], tmp_path / "stage")
    (tmp_path / "half" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="neither masks/ nor alpha/"):
        discover([tmp_path / "half"], tmp_path / "stage")


def test_two_folders_with_one_name_stay_apart(tmp_path: Path) -> None:
    a = layout(tmp_path / "a" / "data", 2)
    b = layout(tmp_path / "b" / "data", 2)
    names = [s.name for s in discover([a, b], tmp_path / "stage").sources]
    assert names == ["data", "data-2"]


def test_split_off_is_fixed_and_keeps_both_parts() -> None:
    stems = [f"x{i}" for i in range(20)]
    train, val = split_off(stems, 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert split_off(stems, 0.2, seed=0) == (train, val)  # the same on a re-run
    assert split_off(stems, 0.2, seed=1) != (train, val)
    assert split_off(["a", "b"], 0.01, 0)[1] and split_off(["a", "b"], 0.99, 0)[0]  # one of each
    with pytest.raises(DataError, match="at least 2"):
        split_off(["a"], 0.2, 0)


def test_cache_is_reused_until_an_input_changes(tmp_path: Path) -> None:
    root = layout(tmp_path / "mine", 2)
    split = write_split(tmp_path / "all.txt", ["s0", "s1"])
    first = cached([(root, split)], tmp_path / "c.npz", 64, 90)
    again = cached([(root, split)], tmp_path / "c.npz", 64, 90)
    assert not first.reused and again.reused
    img, _ = person(seed=9)
    cv2.imwrite(str(root / "images" / "s0.jpg"), img)  # an edited photo
    assert not cached([(root, split)], tmp_path / "c.npz", 64, 90).reused
    assert not cached([(root, split)], tmp_path / "c.npz", 96, 90).reused  # another size


def test_replay_pick_spreads_and_excludes_the_users_images(tmp_path: Path) -> None:
    a, b = layout(tmp_path / "a", 6), layout(tmp_path / "b", 6)
    excluded = (a / "images" / "s0.jpg").resolve()
    picked = pick_replay([(a, [f"s{i}" for i in range(6)]), (b, [f"s{i}" for i in range(6)])], 5, 0,
                         {excluded})
    counts = {root.name: len(stems) for root, stems in picked}
    assert counts == {"a": 2, "b": 3}
    assert "s0" not in dict(picked)[a]
    assert replay_count(150, 0.25, 300) == 50 and replay_count(150, 0.0, 300) == 0
    assert replay_count(3000, 0.25, 300) == 300
