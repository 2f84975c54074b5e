"""The memory plan (mgld.pipeline.memory): automatic VAE tile size, out-of-memory retry, offloading."""

import logging

import pytest
import torch

from conftest import ROOT
from mgld.config import load_config
from mgld.models import build_vae
from mgld.perf.simulate import peak_bytes
from mgld.pipeline.memory import (
    VAE_BYTES_PER_PIXEL,
    Offloader,
    auto_decode_tile,
    decode_tile_bytes,
    retry_on_oom,
    smaller_tile,
    tile_stride_for,
)

FRAME_720P = (736, 1280)  # the padded 720p frame


def test_vae_cost_per_pixel_is_the_counted_peak_of_the_full_size_vae():
    with torch.device("meta"):
        vae = build_vae(load_config(ROOT / "configs/infer.yaml").model)

    def encode_decode(x):
        posterior, feats = vae.encode(x)
        return vae.decode(posterior.mean, feats, x.shape[0])

    x = torch.empty(1, 3, 128, 128)
    per_pixel = {
        "fp32": peak_bytes(encode_decode, vae, x) / 128**2,
        "bf16": peak_bytes(encode_decode, vae, x, dtype=torch.bfloat16) / 128**2,
        "autocast_fp16": peak_bytes(encode_decode, vae, x, autocast=torch.float16) / 128**2,
    }
    for key, value in per_pixel.items():
        assert value == pytest.approx(VAE_BYTES_PER_PIXEL[key], rel=1e-3), key


def test_auto_tile_is_960_when_it_fits_and_smaller_when_memory_is_short():
    need = {t: decode_tile_bytes(t, FRAME_720P, 5) for t in (960, 768, 512)}
    assert need[960] > need[768] > need[512]
    assert need[960] / 2**30 == pytest.approx(13.06 + 0.12, abs=0.05)  # 736x960 x 5 frames, fp32
    assert auto_decode_tile(80 * 2**30, FRAME_720P, 5) == 960
    assert auto_decode_tile(need[960], FRAME_720P, 5) == 960
    assert auto_decode_tile(need[960] - 1, FRAME_720P, 5) == 896
    assert auto_decode_tile(need[768], FRAME_720P, 5) == 768
    assert auto_decode_tile(need[768] - 1, FRAME_720P, 5) == 704
    # bf16 weights halve the activations: the 960 tile fits in what fp32 needs for 704
    assert auto_decode_tile(need[768], FRAME_720P, 5, torch.bfloat16) == 960
    assert auto_decode_tile(need[960], FRAME_720P, 5, torch.float16, autocast=True) == 960
    # a tile never exceeds the frame: a small frame costs the same for any tile size
    assert decode_tile_bytes(960, (512, 512), 5) == decode_tile_bytes(512, (512, 512), 5)
    sizes = [auto_decode_tile(b * 2**30, FRAME_720P, 5) for b in range(1, 20)]
    assert sizes == sorted(sizes)  # more memory, never a smaller tile


def test_auto_tile_warns_when_even_the_smallest_does_not_fit(caplog):
    with caplog.at_level(logging.WARNING):
        assert auto_decode_tile(2**20, FRAME_720P, 5) == 256
    assert "infer.offload=model" in caplog.text


def test_tile_stride_and_next_smaller_tile():
    assert tile_stride_for(960) == 750 and tile_stride_for(512) == 400 and tile_stride_for(768) == 600
    assert tile_stride_for(512, 512, 400) == 400 and tile_stride_for(960, 960, 751) == 751  # as configured
    assert all(tile_stride_for(t) % 8 == 0 for t in (256, 320, 704, 896))
    assert smaller_tile(960) == 768 and smaller_tile(768) == 576 and smaller_tile(256) is None


def _oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_retries_once_with_a_smaller_tile_and_names_the_knob(caplog):
    tried = []

    def run(tile):
        tried.append(tile)
        if tile > 768:
            raise _oom()
        return f"decoded at {tile}"

    with caplog.at_level(logging.WARNING):
        assert retry_on_oom(run, 960, knob="decode.tile_size", smaller=smaller_tile) == "decoded at 768"
    assert tried == [960, 768] and "decode.tile_size=768" in caplog.text

    def never(tile):
        raise _oom()

    with pytest.raises(MemoryError, match=r"decode.tile_size=960 and again with decode.tile_size=768.*576"):
        retry_on_oom(never, 960, knob="decode.tile_size", smaller=smaller_tile)
    with pytest.raises(ValueError):  # other errors are not retried
        retry_on_oom(lambda t: (_ for _ in ()).throw(ValueError("bad")), 960, knob="k", smaller=smaller_tile)
    with pytest.raises(MemoryError, match="smallest"):
        retry_on_oom(never, 256, knob="decode.tile_size", smaller=smaller_tile)


def _nets():
    torch.manual_seed(0)
    return {"a": torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
            "b": torch.nn.Linear(3, 3)}


def test_model_offload_keeps_only_the_stage_networks_on_the_device():
    nets = _nets()
    values = {n: [p.clone() for p in m.parameters()] for n, m in nets.items()}
    # "meta" stands in for the GPU: weights moved there lose their values, so the host copies must bring them back
    off = Offloader(nets, "meta", "model")
    assert all(p.device.type == "cpu" for m in nets.values() for p in m.parameters())
    with off.use("a"):
        assert all(p.is_meta for p in nets["a"].parameters()) and not nets["b"].weight.is_meta
    with off.use("b"):
        assert nets["b"].weight.is_meta and not any(p.is_meta for p in nets["a"].parameters())
    with off.use("a", "b"):
        assert nets["b"].weight.is_meta and all(p.is_meta for p in nets["a"].parameters())
    with off.use():
        pass
    assert off.resident == set()
    for name, module in nets.items():
        assert all(torch.equal(p, v) for p, v in zip(module.parameters(), values[name]))
    with pytest.raises(KeyError):
        with off.use("flow"):
            pass


def test_sequential_offload_moves_each_layer_for_its_own_call():
    nets = _nets()
    x = torch.randn(2, 4)
    expected = nets["a"](x)
    seen = []
    nets["a"][2].register_forward_pre_hook(
        lambda m, a: seen.append((m.weight.device.type, nets["a"][0].weight.device.type)))
    off = Offloader(nets, "cpu", "sequential")
    assert torch.equal(nets["a"](x), expected) and seen == [("cpu", "cpu")]
    off.close()
    off = Offloader(_nets(), "meta", "sequential")
    layer = off.models["a"][0]
    out = layer(torch.empty(2, 4, device="meta"))  # on the "device" only during its own call
    assert out.is_meta and layer.weight.device.type == "cpu"
    off.close()
    assert layer.weight.is_meta  # close puts everything on the device
    with pytest.raises(ValueError):
        Offloader(_nets(), "cpu", "disk")
    with pytest.raises(ValueError, match="model"):  # infer.offload=none builds no Offloader (Runtime.prepare)
        Offloader(_nets(), "cpu", "none")
