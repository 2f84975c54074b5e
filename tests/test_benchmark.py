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


def test_benchmark_counts_flops_work_ratio_and_mfu(tmp_path):
    import torch

    from mgld.perf.simulate import count_flops

    cfg = load_config(ROOT / "configs/tiny.yaml", ["sampling.steps=1", "sampling.latent_tile_size=16",
                                                   "sampling.latent_tile_overlap=8", "chunk.frames=5"])
    result = benchmark(cfg, 32, 48, 5, tmp_path, peak_tflops=0.5)  # latent 16x24: 2 tiles of 16 per step
    den = result["denoiser"]
    assert den["calls"] == 2 and den["call_shapes"] == [
        {"shape": [5, 4, 16, 16], "frames": 5, "calls": 2, "tflop": den["tflop_per_call"]}]
    from mgld.models import build_denoiser

    with torch.device("meta"):
        net = build_denoiser(cfg.model)
    x = torch.empty(5, 4, 16, 16)
    assert den["tflop_per_call"] == count_flops(net, net, x, torch.zeros(1, dtype=torch.long), x, 5) / 1e12
    unet_seconds = result["stages"]["encoder+unet"]["seconds"]
    assert den["tflops_achieved"] == den["tflop"] / unet_seconds and den["mfu"] == den["tflops_achieved"] / 0.5
    work = result["work_ratio"]
    assert work["measured"] == work["modelled"]["overlap"] == 2 * 16 * 16 / (16 * 24)
    assert work["modelled"]["shifted"] < work["modelled"]["overlap"]
    assert result["vae"]["tflop"] > 0
    steps = result["stages"]["encoder+unet"]["seconds"] + result["stages"]["guidance"]["seconds"]
    assert result["seconds_per_frame_50_steps"] * 5 == __import__("pytest").approx(
        result["total_seconds"] + 49 * steps)
    assert "MFU" in table(result) and "work ratio" in table(result)


def test_compare_runs_two_configurations_interleaved_and_measures_the_difference(tmp_path):
    from mgld.perf.benchmark import compare, compare_table

    base = ["sampling.steps=1", "sampling.latent_tile_size=16", "sampling.latent_tile_overlap=8"]
    result = compare(ROOT / "configs/tiny.yaml", base, "", "sampling.tile_schedule=shifted sampling.tile_batch=auto",
                     32, 48, 5, tmp_path, repeats=1, warmup=1, quality=True, keep=tmp_path / "kept")
    assert result["order"] == ["A", "B", "A", "B"]
    assert result["B"]["overrides"][-2:] == ["sampling.tile_schedule=shifted", "sampling.tile_batch=auto"]
    assert result["A"]["runs"][0]["work_ratio"]["measured"] > result["B"]["runs"][0]["work_ratio"]["measured"]
    assert 0 < result["ratio_b_over_a"]["total_seconds"]
    diff = result["output_difference"]
    assert 0 < diff["max_abs"] and 10 < diff["psnr"] < 100  # another tiling: other (random-network) frames
    assert len(list((tmp_path / "kept" / "A" / "lr").glob("*.png"))) == 5
    quality = result["quality"]
    assert quality["mean"]["psnr"] > 10 and set(quality["skipped"]) <= {"lpips", "dists"}
    assert "B/A" in compare_table(result)


def test_gpu_check_runs_on_the_cpu(tmp_path):
    import json

    from mgld.perf.gpu_check import main

    assert main(["--cpu-smoke", "--out", str(tmp_path), "--only", "bf16,bf16-batch"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"bf16", "bf16-batch"} and rows["bf16-batch"]["reference"] == "bf16"
    assert rows["bf16"]["calls_per_step"] == 2 and rows["bf16-batch"]["calls_per_step"] == 1
    assert report["variants"]["bf16"]["config"]["applied"]["cast_weights"] is True
    assert "attention" in report["variants"]["bf16"]
    assert (tmp_path / "gpu_check.md").read_text().count("\n| bf16") == 2


def test_cli_work_table(capsys):
    from mgld.cli.benchmark import main

    assert main(["--config", "infer", "--work-table"]) == 0
    out = capsys.readouterr().out
    assert "4.837 TFLOP" in out and "| 720p | 180x320 | 92x160 | 2.23 | 1.67 |" in out
