"""Tile placement, the authors' Gaussian window, feathering and weighted blending."""

from pathlib import Path

import pytest
import torch

from mgld.diffusion.tiling import (
    TileBox,
    blend_tiles,
    feather_weights,
    gaussian_weights,
    pixel_tile_boxes,
    pixel_tile_starts,
    tile_boxes,
    tile_starts,
)

FIXTURES = Path(__file__).parent / "fixtures" / "oracle"


def test_tile_starts_examples():
    assert tile_starts(64, 64, 32) == [0]
    assert tile_starts(10, 64, 32) == [0]  # smaller than a tile: one tile, the whole axis
    assert tile_starts(65, 64, 32) == [0, 1]  # ceil(1/32) + 1 tiles, the last snapped to the end
    assert tile_starts(100, 64, 32) == [0, 32, 36]
    assert tile_starts(120, 64, 32) == [0, 32, 56]
    assert tile_starts(16, 16, 8) == [0]
    with pytest.raises(ValueError):
        tile_starts(100, 64, 64)


@pytest.mark.parametrize("length", range(40, 140, 7))
def test_tiles_cover_the_axis_with_the_requested_overlap(length):
    tile, overlap = 32, 12
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == max(length, tile)
    assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_tile_boxes_smaller_latent_is_one_whole_tile():
    assert tile_boxes(12, 20, tile=64, overlap=32) == [TileBox(0, 0, 12, 20)]
    boxes = tile_boxes(100, 64, tile=64, overlap=32)
    assert [(b.top, b.left) for b in boxes] == [(0, 0), (32, 0), (36, 0)]
    assert TileBox(750, 1500, 960, 960).downscaled(8) == TileBox(93, 187, 120, 120)  # starts floored


@pytest.mark.parametrize("length, starts", [
    (736, [0]), (960, [0]), (961, [0, 1]), (1312, [0, 352]), (1600, [0, 640]), (2560, [0, 750, 1500, 1600]),
])
def test_pixel_tile_starts_are_the_authors_960_750(length, starts):
    assert pixel_tile_starts(length, 960, 750) == starts


def test_pixel_tile_starts_on_the_latent_grid_drift_from_the_pixel_starts():
    # the authors cut the flows with 960 // 8 = 120 and 750 // 8 = 93: the third tile is 1 latent px off
    assert pixel_tile_starts(320, 120, 93) == [0, 93, 186, 200]
    assert [s // 8 for s in pixel_tile_starts(2560, 960, 750)] == [0, 93, 187, 200]


def test_pixel_tile_boxes_in_the_authors_order():
    boxes = pixel_tile_boxes(1440, 2560, 960, 750)
    assert len(boxes) == 8 and {(b.height, b.width) for b in boxes} == {(960, 960)}
    assert [(b.top, b.left) for b in boxes[:3]] == [(0, 0), (480, 0), (0, 750)]  # the row index runs fastest
    assert pixel_tile_boxes(500, 700, 960, 750) == [TileBox(0, 0, 500, 700)]
    assert pixel_tile_boxes(736, 1312, 960, 750) == [TileBox(0, 0, 736, 960), TileBox(0, 352, 736, 960)]
    with pytest.raises(ValueError):
        pixel_tile_starts(100, 64, 0)


def test_gaussian_weights_are_the_fixtures():
    tile_weights = torch.load(FIXTURES / "guidance.pt", weights_only=True)["p_sample_canvas"]["common_inputs"][
        "tile_weights"
    ]  # (1, 4, ts, ts)
    weights = gaussian_weights(*tile_weights.shape[-2:])
    torch.testing.assert_close(weights.expand_as(tile_weights), tile_weights, rtol=1e-6, atol=0)


def test_gaussian_weights_centres():
    w = gaussian_weights(64, 64)
    assert torch.equal(w, w.flip(-1))  # x centre (W-1)/2: symmetric
    assert w[:, 0].argmax().item() == 32 and not torch.equal(w, w.flip(-2))  # y centre H/2
    assert w.max().item() == pytest.approx(w[32, 31].item())
    assert w[32, 31].item() == pytest.approx(
        15.915 * torch.exp(torch.tensor(-0.25 / (2 * 0.01 * 64**2))).item(), rel=1e-4
    )


def test_feather_weights():
    assert torch.equal(feather_weights(TileBox(0, 0, 16, 16), 16, 16, overlap=8), torch.ones(16, 16))
    w = feather_weights(TileBox(0, 8, 16, 16), 16, 40, overlap=8)  # neighbours on both sides in x only
    assert torch.equal(w[:, 0], w[0, 0].expand(16)) and w[0, 0].item() == pytest.approx(1 / 9)
    assert w[0, 7].item() == pytest.approx(8 / 9) and w[0, 8].item() == pytest.approx(8 / 9)
    assert w.min() > 0 and w.max() <= 1


@pytest.mark.parametrize("window", ["gaussian", "feather"])
def test_blending_reconstructs(window):
    h, w = 40, 72
    boxes = tile_boxes(h, w, tile=16, overlap=8)
    weights = None if window == "gaussian" else (lambda box: feather_weights(box, h, w, overlap=8))
    x = torch.randn(3, 4, h, w)
    torch.testing.assert_close(blend_tiles(((b, b.crop(x)) for b in boxes), (h, w), weights), x)


@pytest.mark.parametrize("window, max_step", [("gaussian", 0.7), ("feather", 0.12)])
def test_blending_crosses_the_overlap_gradually(window, max_step):
    boxes = tile_boxes(16, 24, tile=16, overlap=8)  # two tiles side by side, overlapping on x = 8..15
    weights = None if window == "gaussian" else (lambda box: feather_weights(box, 16, 24, overlap=8))
    out = blend_tiles(((b, torch.full((16, 16), float(i))) for i, b in enumerate(boxes)), (16, 24), weights)[0]
    assert torch.equal(out[:8], torch.zeros(8)) and torch.equal(out[16:], torch.ones(8))
    inside = out[8:16]
    assert (inside > 0).all() and (inside < 1).all()
    assert (out.diff() >= 0).all() and out.diff().max() < max_step  # no seam: no jump from 0 to 1


def test_blend_tiles_errors():
    with pytest.raises(ValueError, match="cover"):
        blend_tiles([(TileBox(0, 0, 4, 4), torch.ones(4, 4))], (4, 8))
    with pytest.raises(ValueError, match="does not match"):
        blend_tiles([(TileBox(0, 0, 4, 4), torch.ones(4, 5))], (4, 4))
