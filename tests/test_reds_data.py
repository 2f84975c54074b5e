"""Training data: the REDS-style clip dataset (docs/training.md §2), the stage-2 dataset (§4) and the data stream
(per-sample draws independent of the process layout)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mgld.data.degradations import RealBasicVSRDegradation, USMConfig, usm_sharpen
from mgld.data.reds import Draw, REDSClipDataset, bicubic_downscale, list_sequences, read_frame
from mgld.data.stage2 import Stage2ClipDataset
from mgld.io.frames import InputError
from mgld.training.data import ClipStreamSampler, write_synthetic_sequences, write_synthetic_stage2

NO_USM = USMConfig(enabled=False)

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
    dataset = REDSClipDataset(clips, crop_size=None, usm=NO_USM)  # REDS4 excluded by default
    assert len(dataset) == 24 and {k[0] for k in dataset.keys} == {"100", "101"}


def test_missing_and_empty_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="dataset folder not found"):
        REDSClipDataset(tmp_path / "nowhere")
    (tmp_path / "empty" / "100").mkdir(parents=True)
    with pytest.raises(InputError, match="empty sequence folder"):
        REDSClipDataset(tmp_path / "empty")
    write_synthetic_sequences(tmp_path / "short", num_sequences=1, num_frames=3, size=(32, 32))
    with pytest.raises(InputError, match="no sequence folder with at least 5 frames"):
        REDSClipDataset(tmp_path / "short")


def test_unreadable_frame_names_the_file_when_listed_with_verify_or_when_read(tmp_path):
    write_synthetic_sequences(tmp_path, num_sequences=1, num_frames=T, size=(32, 32))
    bad = tmp_path / "100" / "00000002.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(InputError, match="00000002.png"):
        REDSClipDataset(tmp_path, crop_size=None, verify=True)
    dataset = REDSClipDataset(tmp_path, crop_size=None, usm=NO_USM, use_flip=False)  # headers only: fine
    with pytest.raises(InputError, match="00000002.png"):
        dataset[0]


def test_crop_larger_than_the_frames_is_refused_when_built(clips):
    with pytest.raises(InputError, match="100: frames of 48x40 are smaller than data.crop_size=64"):
        REDSClipDataset(clips, crop_size=64)


def test_frames_are_in_natural_order_with_every_image_extension(tmp_path):
    import cv2

    folder = tmp_path / "100"
    folder.mkdir()
    names = ["1.png", "2.jpg", "10.png", "11.tif", "3.png", "20.png"]  # lexical order: 1, 10, 11, 2, 20, 3
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((32, 32, 3), 10 * i, np.uint8))
    sequences = list_sequences(tmp_path, min_frames=T)
    assert [p.name for p in sequences["100"].frames] == ["1.png", "2.jpg", "3.png", "10.png", "11.tif", "20.png"]
    dataset = REDSClipDataset(tmp_path, crop_size=None, usm=NO_USM, use_flip=False)
    assert dataset[0]["key"] == "100/1" and dataset[1]["key"] == "100/2"
    levels = (dataset[0]["gt"].mean((1, 2, 3)) * 255).round().tolist()
    assert levels == [0, 10, 40, 20, 30]  # files 1, 2, 3, 10, 11 (written with levels 0, 10, 40, 20, 30)


def test_stage2_excludes_reds4_sub_image_folders_by_prefix(tmp_path):
    gt = tmp_path / "gt"
    for name in ("000_s001", "011_s008", "100_s001", "0001"):
        write_synthetic_sequences(gt / name, num_sequences=1, num_frames=T, size=(32, 32))
        (gt / name / "100").rename(gt / f"{name}.tmp")
        (gt / name).rmdir()
        (gt / f"{name}.tmp").rename(gt / name)
    lq, latents = write_synthetic_stage2(gt, tmp_path / "gen")
    dataset = Stage2ClipDataset(gt, lq, latents, T)  # the authors: REDS4 by prefix
    assert sorted(dataset.sequences) == ["100_s001"]  # 0001 starts with "000" too: a prefix is a prefix
    by_name = Stage2ClipDataset(gt, lq, latents, T, exclude_by="name")
    assert sorted(by_name.sequences) == ["0001", "000_s001", "011_s008", "100_s001"]  # the old leak


def test_clip_frames_are_consecutive_and_share_one_crop(clips):
    dataset = REDSClipDataset(clips, crop_size=32, usm=NO_USM, use_flip=False, seed=0)
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
    dataset = REDSClipDataset(clips, crop_size=None, usm=NO_USM, use_flip=False, seed=0)
    item = dataset[11]  # the last frame of 100: the clip starts at a random earlier frame
    gt = (item["gt"] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    source = _source(clips, "100")
    starts = [s for s in range(12 - T + 1) if np.array_equal(source[s : s + T], gt)]
    assert len(starts) == 1


def test_flip_is_shared_and_usm_sharpens_the_gt_only(clips):
    flips = [REDSClipDataset(clips, crop_size=None, usm=NO_USM, seed=s)[0]["gt"] for s in range(6)]
    source = torch.from_numpy(_source(clips, "100")[:T]).permute(0, 3, 1, 2).float() / 255
    kinds = ["plain" if torch.equal(f, source) else "flipped" if torch.equal(f, source.flip(-1)) else "mixed"
             for f in flips]
    assert set(kinds) == {"plain", "flipped"}  # both occur, and a flipped clip is flipped in every frame
    sharp = REDSClipDataset(clips, crop_size=None, use_flip=False, seed=0)[0]
    expected = torch.from_numpy(usm_sharpen(_source(clips, "100")[:T])).permute(0, 3, 1, 2)
    torch.testing.assert_close(sharp["gt"], expected)
    plain_lq = REDSClipDataset(clips, crop_size=None, usm=NO_USM, use_flip=False, seed=0)[0]["lq"]
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
    with pytest.raises(InputError, match="101/00000000.npy.*does not fit"):
        Stage2ClipDataset(gt_root, lq_root, latent_root, num_frames=T)[2]
    (latent_root / "101" / "00000007.npy").unlink()
    with pytest.raises(InputError, match="101/00000007.npy"):
        Stage2ClipDataset(gt_root, lq_root, latent_root, num_frames=T)


def test_degraded_lq_is_the_unrounded_float_degradation(clips):
    dataset = REDSClipDataset(clips, crop_size=32, degradation=RealBasicVSRDegradation(), seed=3)
    lq = dataset[2]["lq"]
    assert not torch.equal(lq, (lq * 255).round() / 255)  # not quantised to 8 bits (the authors' float LQ)


def test_stream_gives_each_sample_the_same_draws_on_any_process_layout(clips):
    """2 processes x batch 2 hold, per global micro-batch, the clips and draws of 1 process x batch 4."""
    dataset = REDSClipDataset(clips, crop_size=32, degradation=RealBasicVSRDegradation())
    n = len(dataset)
    one = ClipStreamSampler(n, 4, seed=5)
    two = [ClipStreamSampler(n, 2, rank=r, world_size=2, seed=5) for r in range(2)]
    for batch in (0, 1, n // 4, 3 * (n // 4) + 2):  # within the first epoch and later ones
        assert one.draws(batch) == two[0].draws(batch) + two[1].draws(batch)
    epoch0 = [d.index for b in range(n // 4) for d in one.draws(b)]
    assert len(set(epoch0)) == len(epoch0) == 4 * (n // 4)  # an epoch visits clips without repeats
    assert epoch0 != [d.index for b in range(n // 4, 2 * (n // 4)) for d in one.draws(b)]  # reshuffled
    draw = one.draws(3)[1]
    a, b = dataset[draw], dataset[Draw(*draw)]
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]) and a["seed"] == b["seed"]
    other = dataset[draw._replace(sample=draw.sample + 1)]  # same clip, another place in the stream
    assert not torch.equal(a["lq"], other["lq"]) and a["seed"] != other["seed"]
    resumed = ClipStreamSampler(n, 4, seed=5, start_batch=7)
    it = iter(resumed)
    assert [next(it) for _ in range(8)] == one.draws(7) + one.draws(8)
    with pytest.raises(InputError, match="fewer than one global batch of 8"):
        ClipStreamSampler(5, 4, world_size=2)


def test_loader_workers_do_not_change_the_batches(clips):
    from torch.utils.data import DataLoader

    dataset = REDSClipDataset(clips, crop_size=32, degradation=RealBasicVSRDegradation())

    def batches(workers: int) -> list[dict]:
        loader = DataLoader(dataset, batch_size=2, sampler=ClipStreamSampler(len(dataset), 2, seed=1, start_batch=3),
                            num_workers=workers)
        it = iter(loader)
        return [next(it) for _ in range(2)]

    for a, b in zip(batches(0), batches(2)):
        assert a["key"] == b["key"] and torch.equal(a["lq"], b["lq"]) and torch.equal(a["seed"], b["seed"])
        assert a["batch"].tolist() == b["batch"].tolist() and a["batch"][0] in (3, 4)
