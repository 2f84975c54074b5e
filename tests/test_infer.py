"""End-to-end inference on disk (tiny random networks): input/output kinds, resume, bad inputs, the CLI."""

import os
import subprocess
import sys
from dataclasses import replace

import av
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from mgld.config import load_config
from mgld.io.sequences import FrameWriter, InputError
from mgld.pipeline.pipeline import MGLDPipeline
from mgld.pipeline.runner import run
from mgld.weights.checkpoints import CheckpointError, save_model_folder
from test_video_io import H, W, make_video, read_video, save_frames

TINY = ROOT / "configs" / "tiny.yaml"
NAMES = [f"im{i}.png" for i in (1, 2, 3, 10, 11, 12)]  # natural order 1, 2, 3, 10, 11, 12


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY, ["sampling.steps=1", "sampling.guidance_scale=10"])


@pytest.fixture(scope="module")
def pipe(cfg):
    return MGLDPipeline.from_config(cfg)


def _pngs(folder):
    return sorted(p.name for p in folder.glob("*.png"))


def test_frame_folder_to_frames_same_names_4x(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr", NAMES)
    summary = run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert summary.frames_written == 6 and summary.frames_skipped == 0
    assert _pngs(tmp_path / "sr") == sorted(NAMES)
    assert Image.open(tmp_path / "sr" / "im12.png").size == (4 * W, 4 * H)


def test_folder_of_sequences_gives_one_folder_each(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr" / "000", NAMES[:3])
    save_frames(tmp_path / "lr" / "011", NAMES[:2])
    run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert _pngs(tmp_path / "sr" / "000") == sorted(NAMES[:3])
    assert _pngs(tmp_path / "sr" / "011") == sorted(NAMES[:2])


@pytest.mark.parametrize("audio", [None, "aac"])
def test_video_to_video_keeps_rate_and_audio(tmp_path, cfg, pipe, audio):
    make_video(tmp_path / "in.mp4", 6, audio=audio)
    run(cfg, tmp_path / "in.mp4", tmp_path / "out.mp4", pipe=pipe, progress=False)
    frames, stream, kinds = read_video(tmp_path / "out.mp4")
    assert len(frames) == 6 and frames[0].shape == (4 * H, 4 * W, 3)
    assert stream.average_rate == 25 and stream.codec_context.name == "h264"
    assert ("audio" in kinds) == (audio is not None)


def test_video_to_frames(tmp_path, cfg, pipe):
    make_video(tmp_path / "in.mkv", 4)
    run(cfg, tmp_path / "in.mkv", tmp_path / "sr", pipe=pipe, progress=False)
    assert _pngs(tmp_path / "sr") == [f"{i:08d}.png" for i in range(4)]


def test_resume_after_interruption_is_identical_and_keeps_finished_frames(tmp_path, cfg, pipe, monkeypatch):
    save_frames(tmp_path / "lr", [f"{i:03d}.png" for i in range(8)])
    run(cfg, tmp_path / "lr", tmp_path / "ref", pipe=pipe, progress=False)

    original, calls = FrameWriter.write, []

    def interrupted(self, index, frame):
        if len(calls) == 6:
            raise KeyboardInterrupt  # killed while writing the second chunk
        calls.append(index)
        original(self, index, frame)

    monkeypatch.setattr(FrameWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    monkeypatch.setattr(FrameWriter, "write", original)
    assert len(_pngs(tmp_path / "sr")) == 6 and not list((tmp_path / "sr").glob("*.tmp"))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sr").glob("*.png")}
    summary = run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert summary.frames_written == 2 and summary.frames_skipped == 6
    assert all((tmp_path / "sr" / n).stat().st_mtime_ns == t for n, t in before.items())
    for name in _pngs(tmp_path / "ref"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "sr" / name)),
                              np.asarray(Image.open(tmp_path / "ref" / name))), name


def test_overlapping_chunks_write_each_frame_once(tmp_path, cfg, pipe, monkeypatch):
    save_frames(tmp_path / "lr", [f"{i:03d}.png" for i in range(9)])
    overlapped = replace(cfg, chunk=replace(cfg.chunk, overlap=2))
    p = MGLDPipeline(pipe.denoiser, pipe.vae, overlapped)
    original, written = FrameWriter.write, []
    monkeypatch.setattr(FrameWriter, "write", lambda self, i, f: (written.append(i), original(self, i, f)))
    run(overlapped, tmp_path / "lr", tmp_path / "sr", pipe=p, progress=False)
    assert written == list(range(9))


def _bad(tmp_path, case):
    lr = tmp_path / "lr"
    if case == "missing":
        return tmp_path / "nothing", "nothing: no such file"
    lr.mkdir()
    if case == "empty":
        return lr, "empty"
    save_frames(lr, ["a.png", "b.png"])
    if case == "truncated":
        data = (lr / "b.png").read_bytes()
        (lr / "b.png").write_bytes(data[: len(data) // 2])
        return lr, "b.png"
    if case == "sizes":
        Image.fromarray(np.zeros((H + 2, W, 3), np.uint8)).save(lr / "b.png")
        return lr, "b.png"
    if case == "no_video_stream":
        path = tmp_path / "audio.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("aac", rate=48000, layout="mono")
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, 0
            c.mux(s.encode(frame))
            c.mux(s.encode(None))
        return path, "audio.mp4"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "sizes", "no_video_stream"])
def test_bad_inputs_fail_before_any_model_is_built(tmp_path, cfg, case, monkeypatch):
    path, fragment = _bad(tmp_path, case)
    monkeypatch.setattr(MGLDPipeline, "from_config", lambda *a, **k: pytest.fail("model built before validation"))
    with pytest.raises(InputError, match=fragment):
        run(cfg, path, tmp_path / "out", progress=False)


def test_unwritable_output_is_refused_before_any_model_is_built(tmp_path, cfg, monkeypatch):
    save_frames(tmp_path / "lr", NAMES[:2])
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setattr(MGLDPipeline, "from_config", lambda *a, **k: pytest.fail("model built before validation"))
    with pytest.raises(InputError, match="a_file"):
        run(cfg, tmp_path / "lr", tmp_path / "a_file" / "sr", progress=False)


def test_checkpoint_that_does_not_fit_the_config(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr", NAMES[:2])
    save_model_folder(tmp_path / "w", cfg.model, denoiser=pipe.denoiser, vae=pipe.vae)
    misfit = load_config(TINY, [f"infer.weights={tmp_path / 'w'}", "infer.random_weights=false",
                                "model.unet.sft_hidden=16"])
    with pytest.raises(CheckpointError, match="does not fit the config: unet.sft_hidden"):
        run(misfit, tmp_path / "lr", tmp_path / "sr", progress=False)


def test_cli_smoke_on_the_sample_clip(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "scripts/infer.py", "--config", str(TINY), "--input", "mgld/assets/sample_lr",
           "--output", str(tmp_path / "sr"), "--steps", "1", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert "RANDOM WEIGHTS" in out.stderr
    assert len(_pngs(tmp_path / "sr")) == len(_pngs(ROOT / "mgld/assets/sample_lr"))
    bad = subprocess.run([sys.executable, "scripts/infer.py", "--config", str(TINY), "--input",
                          str(tmp_path / "missing"), "--output", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 1 and "missing" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_help_lists_every_flag():
    out = subprocess.run([sys.executable, "scripts/infer.py", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0
    for flag in ("--unet", "--vae", "--steps", "--guidance-scale", "--flow", "--color-fix", "--dec-w",
                 "--tile-size", "--chunk-frames", "--seed", "--precision", "--device", "--devices"):
        assert flag in out.stdout


