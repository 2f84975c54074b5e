"""Training data: the REDS-style clip dataset (docs/training.md §2) and the stage-2 dataset (§4)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mgld.data.degradations import RealBasicVSRDegradation, usm_sharpen
from mgld.data.reds import REDSClipDataset, bicubic_downscale, list_sequences, read_frame
from mgld.data.stage2 import Stage2ClipDataset
from mgld.training.data import write_synthetic_sequences, write_synthetic_stage2

T = 5


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Sequences 100, 101 (12 frames, 40x48), a REDS4 name (000) and a too-short one (102, 3 frames)."""
    root = tmp_path_factory.mktemp("clips")
    write_synthetic_sequences(root, num_sequences=2, num_frames=12, size=(40, 48), seed=1)
    write_synthetic_sequences(root, num_sequences=1, num_frames=12, size=(40, 48), seed=2, first_index=0)
    write_synthetic_sequences(root, num_sequences=1, num_frames=3, size=(40, 48), seed=3, first_index=102)
    return root


def _source(root, name):
    return np.stack([read_frame(p) for p in sorted((root / name).glob("*.png"))])


def test_sequences_exclude_reds4_and_skip_short_ones_with_a_warning(clips, caplog):
    with caplog.at_level(logging.WARNING):
        sequences = list_sequences(clips, exclude=["000"], min_frames=T)
    assert list(sequences) == ["100", "101"]
    assert "102 (3)" in caplog.text
    dataset = REDSClipDataset(clips, crop_size=None, usm=False)  # REDS4 excluded by default
    assert len(dataset) == 24 and {k[0] for k in dataset.keys} == {"100", "101"}


def test_missing_and_empty_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        REDSClipDataset(tmp_path / "nowhere")
    (tmp_path / "empty" / "100").mkdir(parents=True)
    with pytest.raises(ValueError, match="no sequence folder with at least 5 frames"):
        REDSClipDataset(tmp_path / "empty")


def test_unreadable_frame_names_the_file(tmp_path):
    write_synthetic_sequences(tmp_path, num_sequences=1, num_frames=T, size=(32, 32))
    bad = tmp_path / "100" / "00000002.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(OSError, match="00000002.png"):
        REDSClipDataset(tmp_path, crop_size=None, usm=False, use_flip=False)[0]


def test_clip_frames_are_consecutive_and_share_one_crop(clips):
    dataset = REDSClipDataset(clips, crop_size=32, usm=False, use_flip=False, seed=0)
    item = dataset[3]  # key 100/00000003 -> frames 3..7
    assert item["gt"].shape == (T, 3, 32, 32) and item["lq"].shape == (T, 3, 8, 8)
    assert item["key"] == "100/00000003"
    source = _source(clips, "100")[3 : 3 + T]
    gt = (item["gt"] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    offsets = [(y, x) for y in range(9) for x in range(17) if np.array_equal(source[0, y : y + 32, x : x + 32], gt[0])]
    assert len(offsets) == 1
    y, x = offsets[0]
    assert np.array_equal(source[:, y : y + 32, x : x + 32], gt)  # the same crop for every frame
    # LQ without a degradation: clean bicubic of the (unsharpened) GT crop
    lq = (item["lq"] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(lq, bicubic_downscale(gt, 4))


def test_clip_overrunning_the_sequence_moves_earlier(clips):
    dataset = REDSClipDataset(clips, crop_size=None, usm=False, use_flip=False, seed=0)
    item = dataset[11]  # the last frame of 100: the clip starts at a random earlier frame
    gt = (item["gt"] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    source = _source(clips, "100")
    starts = [s for s in range(12 - T + 1) if np.array_equal(source[s : s + T], gt)]
    assert len(starts) == 1


def test_flip_is_shared_and_usm_sharpens_the_gt_only(clips):
    flips = [REDSClipDataset(clips, crop_size=None, usm=False, seed=s)[0]["gt"] for s in range(6)]
    source = torch.from_numpy(_source(clips, "100")[:T]).permute(0, 3, 1, 2).float() / 255
    kinds = ["plain" if torch.equal(f, source) else "flipped" if torch.equal(f, source.flip(-1)) else "mixed"
             for f in flips]
    assert set(kinds) == {"plain", "flipped"}  # both occur, and a flipped clip is flipped in every frame
    sharp = REDSClipDataset(clips, crop_size=None, use_flip=False, seed=0)[0]
    expected = torch.from_numpy(usm_sharpen(_source(clips, "100")[:T])).permute(0, 3, 1, 2)
    torch.testing.assert_close(sharp["gt"], expected)
    plain_lq = REDSClipDataset(clips, crop_size=None, usm=False, use_flip=False, seed=0)[0]["lq"]
    assert torch.equal(sharp["lq"], plain_lq)  # the LQ comes from the unsharpened frames


def test_degraded_items_are_deterministic_per_seed_and_batch_as_b_t_c_h_w(clips):
    degradation = RealBasicVSRDegradation()
    a = REDSClipDataset(clips, crop_size=32, degradation=degradation, seed=7)
    b = REDSClipDataset(clips, crop_size=32, degradation=degradation, seed=7)
    assert torch.equal(a[5]["lq"], b[5]["lq"]) and torch.equal(a[5]["gt"], b[5]["gt"])
    assert not torch.equal(a[5]["lq"], a[6]["lq"])
    batch = next(iter(DataLoader(a, batch_size=2)))
    assert batch["gt"].shape == (2, T, 3, 32, 32) and batch["lq"].shape == (2, T, 3, 8, 8)
    assert batch["lq"].dtype == torch.float32 and 0 <= batch["lq"].min() and batch["lq"].max() <= 1


def test_stage2_dataset_segments_and_errors(tmp_path):
    gt_root = write_synthetic_sequences(tmp_path / "gt", num_sequences=2, num_frames=11, size=(32, 40))
    lq_root, latent_root = write_synthetic_stage2(gt_root, tmp_path / "gen")
    dataset = Stage2ClipDataset(gt_root, lq_root, latent_root, num_frames=T)
    assert len(dataset) == 4  # frames 0-4 and 5-9 of each sequence; frame 10 belongs to no whole segment
    item = dataset[1]
    assert item["key"] == "100/00000005"
    assert item["gt"].shape == (T, 3, 32, 40) and item["lq"].shape == (T, 3, 8, 10)
    assert item["latent"].shape == (T, 4, 4, 5)
    np.testing.assert_array_equal(item["latent"][0].numpy(), np.load(latent_root / "100" / "00000005.npy"))

    np.save(latent_root / "101" / "00000000.npy", np.zeros((4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="101/00000000.npy.*does not fit"):
        Stage2ClipDataset(gt_root, lq_root, latent_root, num_frames=T)[2]
    (latent_root / "101" / "00000007.npy").unlink()
    with pytest.raises(FileNotFoundError, match="101/00000007.npy"):
        Stage2ClipDataset(gt_root, lq_root, latent_root, num_frames=T)
