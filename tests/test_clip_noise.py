"""All the noise of a clip drawn up front (mgld.diffusion.clip_noise): the values of the step-by-step draws."""

import gc
import weakref

import pytest
import torch

from mgld.diffusion.clip_noise import DeviceFrameNoise, draw_clip_noise, frame_noise_on_device
from mgld.diffusion.noise import AuthorsNoise, FrameNoise, draw_index
from mgld.diffusion.tiling import TileBox


def _in_order(noise: FrameNoise):
    """``noise``'s whole-frame draws 0, 1, 2, ... one per call (what draw_clip_noise expects)."""
    index = iter(range(10**6))
    return lambda: noise.frame_draw(next(index))


@pytest.mark.parametrize("shape", [(4, 13, 7), (4, 16, 16)])  # sizes that are and are not a multiple of 16
def test_clip_noise_equals_the_per_step_draws(shape):
    steps = 6
    sequential = FrameNoise(42, [3, 4, 5, 6, 7], shape, steps)
    expected = [sequential.frame_draw(j) for j in range(steps + 1)]  # posterior, x_T, steps k = N-1 .. 1
    noise = frame_noise_on_device(FrameNoise(42, [3, 4, 5, 6, 7], shape, steps), "cpu", 2**30)
    assert isinstance(noise, DeviceFrameNoise) and noise.draws.shape == (steps + 1, 5, *shape)
    whole = TileBox(0, 0, *shape[-2:])
    requests = [("posterior", None), ("x_T", None)] + [("xi", k) for k in range(steps - 1, 0, -1)]
    for (kind, step), want in zip(requests, expected, strict=True):
        assert torch.equal(noise.draw(kind, step, whole), want), (kind, step)
    past = DeviceFrameNoise(FrameNoise(42, [3], shape, steps).frame_draw, steps,
                            lambda kind, step: draw_index(kind, step, steps), "cpu")  # one draw short
    with pytest.raises(IndexError):
        past.draw("xi", 1, whole)


def test_draw_clip_noise_converts_dtype_and_checks_its_input():
    draws = draw_clip_noise(_in_order(FrameNoise(0, [0, 1], (4, 3, 3), 2)), 3, "cpu", torch.float64)
    assert draws.dtype == torch.float64 and draws.shape == (3, 2, 4, 3, 3)
    assert torch.equal(draws[0].float(), FrameNoise(0, [0, 1], (4, 3, 3), 2).frame_draw(0))
    with pytest.raises(ValueError):
        draw_clip_noise(_in_order(FrameNoise(0, [0], (1,), 1)), 0)
    with pytest.raises(ValueError, match="CPU"):
        draw_clip_noise(lambda: torch.zeros(1, device="meta"), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_clip_noise_on_the_device_equals_the_cpu_streams():
    shape, steps = (4, 12, 20), 3
    stream = FrameNoise(7, [0, 1, 2], shape, steps)
    noise = frame_noise_on_device(FrameNoise(7, [0, 1, 2], shape, steps), "cuda", 2**30)
    assert isinstance(noise, DeviceFrameNoise) and noise.draws.is_cuda
    box = TileBox(3, 4, 8, 9)
    for kind, step in (("posterior", None), ("x_T", None), ("xi", 2), ("xi", 1)):
        assert torch.equal(noise.draw(kind, step, box).cpu(), stream.draw(kind, step, box))


def test_device_frame_noise_answers_crops_of_the_whole_frame_draws():
    stream = FrameNoise(5, [0, 1], (4, 12, 20), 3)
    whole = [stream.frame_draw(j) for j in range(4)]  # whole-frame draws 0..3 of every frame's stream
    calls = []

    def frame_draw(j):
        calls.append(j)
        return whole[j]

    order = {("posterior", None): 0, ("x_T", None): 1, ("xi", 2): 2, ("xi", 1): 3}
    noise = DeviceFrameNoise(frame_draw, 4, lambda kind, step: order[(kind, step)], "cpu")
    assert calls == [0, 1, 2, 3]  # every draw made once, up front
    box = TileBox(2, 5, 8, 10)
    assert torch.equal(noise.draw("xi", 1, box), box.crop(whole[3]))
    assert torch.equal(noise.draw("posterior", None, TileBox(0, 0, 12, 20)), whole[0])
    with pytest.raises(IndexError):
        DeviceFrameNoise(frame_draw, 2, lambda kind, step: order[(kind, step)]).draw("xi", 1, box)


def test_frame_noise_on_device_answers_every_draw_of_the_streams_when_it_fits():
    shape, steps = (4, 10, 14), 4
    source = FrameNoise(11, [2, 3, 4], shape, steps)
    size = (steps + 1) * 3 * 4 * 10 * 14 * 4  # bytes of every draw of the clip
    noise = frame_noise_on_device(source, "cpu", size)
    assert isinstance(noise, DeviceFrameNoise) and noise.draws.shape == (steps + 1, 3, *shape)
    reference = FrameNoise(11, [2, 3, 4], shape, steps)
    for box in (TileBox(0, 0, 10, 14), TileBox(2, 3, 5, 8)):
        for kind, step in [("posterior", None), ("x_T", None)] + [("xi", k) for k in range(steps - 1, 0, -1)]:
            assert torch.equal(noise.draw(kind, step, box), reference.draw(kind, step, box)), (kind, step, box)
    assert frame_noise_on_device(source, "cpu", size - 1) is source  # does not fit: drawn step by step
    authors = AuthorsNoise(0, 3)
    assert frame_noise_on_device(authors, "cpu", 2**40) is authors  # only the per-frame streams are kept


def test_frame_noise_on_device_keeps_no_host_cache_and_does_not_keep_its_source_alive():
    shape, steps = (4, 6, 8), 3
    source = FrameNoise(3, [0, 1], shape, steps)
    noise = frame_noise_on_device(source, "cpu", 2**30)
    assert isinstance(noise, DeviceFrameNoise) and source._cache == {}  # drawn without filling the host cache
    alive = weakref.ref(source)
    del source
    gc.collect()
    assert alive() is None  # the device copy holds no reference to the FrameNoise
    reference = FrameNoise(3, [0, 1], shape, steps)
    box = TileBox(0, 0, 6, 8)
    for kind, step in (("posterior", None), ("x_T", None), ("xi", 2), ("xi", 1)):
        assert torch.equal(noise.draw(kind, step, box), reference.draw(kind, step, box))
