"""The benchmark's bookkeeping (not its timings): every stage is seen the expected number of times."""

from conftest import ROOT
from mgld.config import load_config
from mgld.perf.benchmark import STAGES, benchmark, table, write_panned_clip


def test_benchmark_counts_every_stage(tmp_path):
    cfg = load_config(ROOT / "configs/tiny.yaml", ["sampling.steps=2"])
    result = benchmark(cfg, 16, 24, 6, tmp_path)  # chunks [0, 5) and [1, 6): two clips
    calls = {name: result["stages"][name]["calls"] for name in STAGES}
    assert calls == {"flow": 2, "vae_encode": 2, "encoder+unet": 4, "guidance": 4, "vae_decode": 2}
    assert result["denoising_steps"] == 4 and 0 < result["guidance_over_unet"]
    assert all(result["stages"][n]["peak_bytes"] > 0 for n in STAGES)
    text = table(result)
    assert text.count("\n| ") == len(STAGES) + 2 and "s per output frame" in text
    assert len(list((tmp_path / "sr_6").glob("*.png"))) == 6


def test_panned_clip_moves_one_pixel_per_frame(tmp_path):
    import numpy as np
    from PIL import Image

    write_panned_clip(tmp_path, 3, 16, 20)
    a, b = (np.asarray(Image.open(tmp_path / f"{i:08d}.png")) for i in (0, 1))
    assert np.array_equal(a[:, :-1], b[:, 1:])
