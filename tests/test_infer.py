"""End-to-end inference on disk (tiny random networks): input/output kinds, resume, bad inputs, the CLI."""

import subprocess
import sys
from dataclasses import replace
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, subprocess_env
from infer_helpers import NAMES, TINY, pngs, with_sections
from mgld.config import load_config
from mgld.io.sequences import FrameWriter, InputError
from mgld.pipeline.pipeline import MGLDPipeline
from mgld.pipeline.runner import run
from mgld.weights.checkpoints import CheckpointError, save_model_folder
from video_helpers import H, W, make_video, read_video, save_frames, write_clip


def test_frame_folder_to_frames_same_names_4x(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr", NAMES)
    summary = run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert summary.frames_written == 6 and summary.frames_skipped == 0
    assert pngs(tmp_path / "sr") == sorted(NAMES)
    assert Image.open(tmp_path / "sr" / "im12.png").size == (4 * W, 4 * H)


def test_folder_of_sequences_gives_one_folder_each(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr" / "000", NAMES[:3])
    save_frames(tmp_path / "lr" / "011", NAMES[:2])
    run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert pngs(tmp_path / "sr" / "000") == sorted(NAMES[:3])
    assert pngs(tmp_path / "sr" / "011") == sorted(NAMES[:2])


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
    assert pngs(tmp_path / "sr") == [f"{i:08d}.png" for i in range(4)]


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
    assert len(pngs(tmp_path / "sr")) == 6 and not list((tmp_path / "sr").glob("*.tmp"))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sr").glob("*.png")}
    summary = run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert summary.frames_written == 2 and summary.frames_skipped == 6
    assert all((tmp_path / "sr" / n).stat().st_mtime_ns == t for n, t in before.items())
    for name in pngs(tmp_path / "ref"):
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
    cmd = [sys.executable, "scripts/infer.py", "--config", str(TINY), "--input", "mgld/assets/sample_lr",
           "--output", str(tmp_path / "sr"), "--steps", "1", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=subprocess_env())
    assert out.returncode == 0, out.stderr
    assert "RANDOM WEIGHTS" in out.stderr
    assert len(pngs(tmp_path / "sr")) == len(pngs(ROOT / "mgld/assets/sample_lr"))
    bad = subprocess.run([sys.executable, "scripts/infer.py", "--config", str(TINY), "--input",
                          str(tmp_path / "missing"), "--output", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=subprocess_env())
    assert bad.returncode == 1 and "missing" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_help_lists_every_flag():
    out = subprocess.run([sys.executable, "scripts/infer.py", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0
    for flag in ("--unet", "--vae", "--steps", "--guidance-scale", "--flow", "--color-fix", "--dec-w",
                 "--tile-size", "--chunk-frames", "--seed", "--precision", "--device", "--devices", "--num-nodes",
                 "--shard", "--output-format", "--fps", "--bit-depth", "--quantize", "--codec", "--crf",
                 "--keep-going", "--allow-truncated", "--overwrite"):
        assert flag in out.stdout




# --------------------------------------------------------------------------------------
# Output formats (issue 9 item 7, issue 10 item 3)
# --------------------------------------------------------------------------------------


def _decoded(path, fmt="rgb24"):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format=fmt) for f in container.decode(video=0)]


def test_frames_to_lossless_video_holds_exactly_the_png_frames(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr", NAMES)
    run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    ffv1 = with_sections(cfg, output={"codec": "ffv1", "fps": 12.5})
    run(ffv1, tmp_path / "lr", tmp_path / "sr.mkv", pipe=pipe, progress=False)
    frames = [np.asarray(Image.open(tmp_path / "sr" / n)) for n in NAMES]  # natural order = frame order
    decoded = _decoded(tmp_path / "sr.mkv")
    assert len(decoded) == 6 and all(np.array_equal(a, b) for a, b in zip(decoded, frames))
    _, stream, _ = read_video(tmp_path / "sr.mkv")
    assert stream.average_rate == Fraction(25, 2) and stream.codec_context.name == "ffv1"


def test_folder_of_videos_to_folder_of_videos(tmp_path, cfg, pipe):
    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "b.mp4", 3, audio="aac")
    make_video(tmp_path / "in" / "a.mov", 4, rate=Fraction(30))
    save_frames(tmp_path / "in" / "c", NAMES[:2])
    cfg_video = with_sections(cfg, output={"format": "video", "fps": 10.0})
    run(cfg_video, tmp_path / "in", tmp_path / "out", pipe=pipe, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "a.mp4", "b.mp4", "c.mp4"]
    rates = {}
    for name in ("a", "b", "c"):
        frames, stream, kinds = read_video(tmp_path / "out" / f"{name}.mp4")
        rates[name] = (len(frames), stream.average_rate, kinds)
    assert rates == {"a": (4, 30, ["video"]), "b": (3, 25, ["video", "audio"]), "c": (2, 10, ["video"])}


def test_sixteen_bit_png_and_rounding(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr", NAMES[:2])
    run(cfg, tmp_path / "lr", tmp_path / "t8", pipe=pipe, progress=False)
    run(with_sections(cfg, output={"quantize": "round"}), tmp_path / "lr", tmp_path / "r8", pipe=pipe, progress=False)
    run(with_sections(cfg, output={"bit_depth": 16}), tmp_path / "lr", tmp_path / "t16", pipe=pipe, progress=False)
    t8, r8 = (np.asarray(Image.open(tmp_path / d / NAMES[0])).astype(int) for d in ("t8", "r8"))
    t16 = cv2.imread(str(tmp_path / "t16" / NAMES[0]), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(int)
    assert cv2.imread(str(tmp_path / "t16" / NAMES[0]), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert set(np.unique(r8 - t8)) <= {0, 1} and (r8 != t8).mean() > 0.3  # rounding lifts about half the values
    # trunc(257 y) // 257 == trunc(y) for y = 255 x (up to float32 rounding at a level boundary)
    assert np.abs(t16 // 257 - t8).max() <= 1 and (t16 // 257 == t8).mean() > 0.999
    assert (t16 % 257 != 0).mean() > 0.5  # values between the 8-bit levels: real 16-bit output
    # bit_depth null (--bit-depth auto): as deep as the input
    (tmp_path / "lr16").mkdir()
    for name in NAMES[:2]:
        cv2.imwrite(str(tmp_path / "lr16" / name), cv2.imread(str(tmp_path / "lr" / name)).astype(np.uint16) * 257)
    auto = with_sections(cfg, output={"bit_depth": None})
    for source, bits in (("lr", np.uint8), ("lr16", np.uint16)):
        run(auto, tmp_path / source, tmp_path / f"auto_{source}", pipe=pipe, progress=False)
        assert cv2.imread(str(tmp_path / f"auto_{source}" / NAMES[0]), cv2.IMREAD_UNCHANGED).dtype == bits


def test_vfr_video_keeps_its_timestamps_audio_and_rotation(tmp_path, cfg, pipe):
    src = tmp_path / "vfr.mp4"
    pts = [0, 40, 80, 200, 240, 400, 440]
    write_clip(src, pts, rotation=-90, audio_seconds=0.48)
    run(cfg, src, tmp_path / "out.mp4", pipe=pipe, progress=False)
    with av.open(str(tmp_path / "out.mp4")) as container:
        decoded = list(container.decode(video=0))
    assert [round(float(f.time) * 1000) for f in decoded] == pts  # VFR stays VFR (a constant rate: 0, 69, 137 ...)
    assert decoded[0].rotation == -90 and decoded[0].width == 4 * W

    def audio_times(path):
        with av.open(str(path)) as container:
            return [float(p.pts * p.time_base) for p in container.demux(audio=0) if p.pts is not None]

    assert audio_times(tmp_path / "out.mp4") == pytest.approx(audio_times(src), abs=1e-4)  # in sync
