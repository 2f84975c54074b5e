"""Shifted non-overlapping latent tiles (sampling.tile_schedule: shifted) and the UNet work ratio of each tiling."""

import pytest
import torch

from mgld.diffusion.tiling import pixel_tile_starts, shift_offsets, shifted_segments, shifted_tiles
from mgld.perf.work import FRAME_SIZES, latent_size, padded_size, work_ratio, work_table


@pytest.mark.parametrize("height, width", [(92, 160), (64, 116), (136, 240), (64, 64), (40, 200), (65, 129)])
def test_shifted_tiles_cover_every_latent_pixel_exactly_once_per_step(height, width):
    for step in range(0, 50, 7):
        count = torch.zeros(height, width, dtype=torch.int32)
        for t in shifted_tiles(height, width, 64, step):
            own, box = t.own, t.box
            assert box.top <= own.top and own.top + own.height <= box.top + box.height  # own inside box
            assert box.left <= own.left and own.left + own.width <= box.left + box.width
            assert min(16, height) <= box.height <= 64 and min(16, width) <= box.width <= 64
            assert 0 <= box.top and box.top + box.height <= height and box.left + box.width <= width
            own.crop(count).add_(1)
            inner = t.own_in_box()
            assert (inner.top, inner.left) == (own.top - box.top, own.left - box.left)
        assert torch.equal(count, torch.ones_like(count)), f"step {step}"


def test_shift_offsets_are_a_deterministic_function_of_the_step():
    offsets = [shift_offsets(k, 64) for k in range(50)]
    assert offsets == [shift_offsets(k, 64) for k in range(50)]  # pure
    assert offsets[:3] == [(32, 32), (16, 4), (0, 40)]  # the R2 sequence from 0.5
    assert all(0 <= dy < 64 and 0 <= dx < 64 for dy, dx in offsets)
    assert all(a != b for a, b in zip(offsets, offsets[1:]))  # the seams move at every step
    assert len(set(offsets)) == 50
    # spread over the tile: every quarter of the range is hit in y and in x
    assert {dy // 16 for dy, _ in offsets} == {0, 1, 2, 3} == {dx // 16 for _, dx in offsets}
    assert [t.box for t in shifted_tiles(92, 160, 64, 3)] == [t.box for t in shifted_tiles(92, 160, 64, 3)]


def test_shifted_segments_grow_short_edge_pieces_inwards():
    assert shifted_segments(92, 64, 20, 16) == [(0, 20, 0, 20), (20, 64, 20, 64), (76, 16, 84, 8)]
    assert shifted_segments(92, 64, 0, 16) == [(0, 64, 0, 64), (64, 28, 64, 28)]
    assert shifted_segments(50, 64, 10, 16) == [(0, 50, 0, 50)]  # shorter than a tile: one tile
    with pytest.raises(ValueError):
        shifted_segments(100, 64, 0, 0)


def test_frame_geometry_follows_the_pipeline():
    assert padded_size((180, 320)) == (736, 1280) and latent_size((180, 320)) == (92, 160)
    assert padded_size((180, 320), padding="authors") == (736, 1312)  # both sides gain padding (docs/algorithm.md)
    assert padded_size((128, 128), padding="authors") == (512, 512)
    assert latent_size((120, 213)) == (64, 116)  # 512-px short side
    assert pixel_tile_starts(1280, 960, 750) == [0, 320] and pixel_tile_starts(736, 960, 750) == [0]
    assert pixel_tile_starts(1920, 960, 750) == [0, 750, 960]  # the authors' 960-px tiles, stride 750


def test_work_ratios_of_each_tiling_mode():
    rows = {r["size"]: r["work_ratio"] for r in work_table()}
    expected = {  # overlap-32, overlap-16, authors' per-pixel-tile chain (docs/notes/perf.md)
        "480p": (1.66, 1.66, 1.66), "720p": (2.23, 1.67, 3.34), "1080p": (3.51, 1.88, 6.78), "4K": (3.51, 1.88, 4.24),
    }
    for size, (o32, o16, authors) in expected.items():
        r = rows[size]
        assert (round(r["overlap-32"], 2), round(r["overlap-16"], 2), round(r["authors"], 2)) == (o32, o16, authors)
        assert 1.0 <= r["shifted"] <= 1.1
        assert r["authors+shifted"] < r["authors"]  # shifted tiles inside the authors' pixel tiles
    assert rows["480p"]["authors+shifted"] == rows["480p"]["shifted"]  # one pixel tile: the same
    h, w = latent_size(FRAME_SIZES["720p"])
    per_step = [sum(t.box.height * t.box.width for t in shifted_tiles(h, w, 64, k)) / (h * w) for k in range(50)]
    assert max(per_step) <= 1.3  # at every step, edge tiles included
    assert work_ratio(h, w, "shifted", steps=50) == pytest.approx(sum(per_step) / 50)
    with pytest.raises(ValueError):
        work_ratio(h, w, "nope")
