"""Issue 12 on the inference side: nothing wrong is reported as done (verified resume), damaged inputs are caught
before any work, tiny frames work, failures are one clear error that leaves nothing new behind.

Each test reproduces a failure mode of the issue (the docstring says what happened before) and shows the fix.
"""

import errno
import json
import shutil
import signal
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, subprocess_env
from infer_helpers import NAMES, TINY, pngs, with_sections
from mgld.io.frames import InputError, OutputError
from mgld.pipeline.pipeline import MGLDPipeline
from mgld.pipeline.runner import run
from video_helpers import H, W, make_video, read_video, save_frames, write_clip


def _no_model(monkeypatch):
    monkeypatch.setattr(MGLDPipeline, "from_config", lambda *a, **k: pytest.fail("model built before the check"))


# ------------------------------------------------------------------------------------------------------------
# Output = input
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["same_folder", "inside", "jpeg_same_folder", "sequence_root", "video_itself"])
def test_output_that_is_the_input_is_refused_up_front(tmp_path, cfg, monkeypatch, case):
    """Before: output = input folder resumed with "0 frames written, 5 already present" (the LR frames reported as
    results); JPEG input with output = input wrote PNGs beside the JPEGs."""
    lr = tmp_path / "lr"
    if case == "jpeg_same_folder":
        save_frames(lr, [f"{i}.jpg" for i in range(3)])
    elif case == "sequence_root":
        save_frames(lr / "000", NAMES[:2])
        save_frames(lr / "001", NAMES[:2])
    elif case == "video_itself":
        make_video(tmp_path / "clip.mp4", 3)
    else:
        save_frames(lr, NAMES[:5])
    given = tmp_path / "clip.mp4" if case == "video_itself" else lr
    out = {"inside": lr / "sr", "sequence_root": lr}.get(case, given)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    _no_model(monkeypatch)
    with pytest.raises(InputError, match="output is the input or lies inside it"):
        run(cfg, given, out, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


# ------------------------------------------------------------------------------------------------------------
# Outputs of another input, or of nobody known
# ------------------------------------------------------------------------------------------------------------


def test_leftover_frames_of_another_input_stop_the_run(tmp_path, cfg, pipe):
    """Before: frames left in the output folder by another input (another size) were kept as this run's results."""
    save_frames(tmp_path / "a", NAMES[:3])
    save_frames(tmp_path / "b", NAMES[:3], h=16, w=16)
    run(cfg, tmp_path / "a", tmp_path / "sr", pipe=pipe, progress=False)
    with pytest.raises(InputError) as err:
        run(cfg, tmp_path / "b", tmp_path / "sr", pipe=pipe, progress=False)
    assert f"{tmp_path / 'sr'}: holds the results of another input ({tmp_path / 'a'})" in str(err.value)
    assert "--overwrite" in str(err.value)
    assert Image.open(tmp_path / "sr" / NAMES[0]).size == (4 * W, 4 * H)  # untouched
    summary = run(with_sections(cfg, infer={"overwrite": True}), tmp_path / "b", tmp_path / "sr", pipe=pipe,
                  progress=False)
    assert summary.frames_written == 3
    assert all(Image.open(tmp_path / "sr" / n).size == (64, 64) for n in NAMES[:3])
    assert run(cfg, tmp_path / "b", tmp_path / "sr", pipe=pipe, progress=False).frames_skipped == 3


def test_output_files_with_no_record_stop_the_run(tmp_path, cfg, pipe):
    """Before: any non-empty file with an output's name counted as done (e.g. frames of another program)."""
    save_frames(tmp_path / "lr", NAMES[:3])
    save_frames(tmp_path / "sr", NAMES[:2], h=4 * H, w=4 * W)  # right names and size, unknown origin
    with pytest.raises(InputError, match=r"2 output file\(s\) already there \(e.g. im1.png\) with no record"):
        run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)


def test_existing_video_of_another_input_stops_the_run(tmp_path, cfg, pipe):
    """Before: an existing .mp4 of another video (10 frames for a 12-frame input) was kept, exit 0."""
    make_video(tmp_path / "ten.mp4", 10)
    make_video(tmp_path / "twelve.mp4", 12, rate=Fraction(30))
    run(cfg, tmp_path / "ten.mp4", tmp_path / "out.mp4", pipe=pipe, progress=False)
    with pytest.raises(InputError, match="holds the results of another input"):
        run(cfg, tmp_path / "twelve.mp4", tmp_path / "out.mp4", pipe=pipe, progress=False)
    (tmp_path / ".out.mp4.mgld.json").unlink()  # a video from elsewhere: no record at all
    with pytest.raises(InputError, match="no record of the mgld run"):
        run(cfg, tmp_path / "twelve.mp4", tmp_path / "out.mp4", pipe=pipe, progress=False)
    run(with_sections(cfg, infer={"overwrite": True}), tmp_path / "twelve.mp4", tmp_path / "out.mp4", pipe=pipe,
        progress=False)
    frames, stream, _ = read_video(tmp_path / "out.mp4")
    assert len(frames) == 12 and stream.average_rate == 30


def test_damaged_outputs_are_redone_and_only_they(tmp_path, cfg, pipe):
    """Before: a truncated output PNG was kept as done."""
    save_frames(tmp_path / "lr", NAMES)
    run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    reference = {n: (tmp_path / "sr" / n).read_bytes() for n in NAMES}
    cut, flipped = tmp_path / "sr" / NAMES[1], tmp_path / "sr" / NAMES[4]
    cut.write_bytes(reference[NAMES[1]][:1000])  # truncated
    data = bytearray(reference[NAMES[4]])
    data[len(data) // 2] ^= 1  # one bit flipped, same size
    flipped.write_bytes(bytes(data))
    summary = run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert (summary.frames_written, summary.frames_skipped) == (2, 4)  # NAMES[1] and NAMES[4], with their chunk
    assert {n: (tmp_path / "sr" / n).read_bytes() for n in NAMES} == reference


def test_other_settings_are_redone_and_a_moved_input_is_not(tmp_path, cfg, pipe):
    save_frames(tmp_path / "lr", NAMES[:3])
    run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    reseeded = with_sections(cfg, sampling={"seed": 7})
    other = MGLDPipeline(pipe.denoiser, pipe.vae, reseeded)
    assert run(reseeded, tmp_path / "lr", tmp_path / "sr", pipe=other, progress=False).frames_written == 3
    manifest = json.loads((tmp_path / "sr" / ".mgld" / "manifest.json").read_text())
    assert manifest["settings"]["sampling.seed"] == 7 and sorted(manifest["frames"]) == sorted(NAMES[:3])
    shutil.move(tmp_path / "lr", tmp_path / "moved")  # same content elsewhere: still this input's results
    assert run(reseeded, tmp_path / "moved", tmp_path / "sr", pipe=other, progress=False).frames_skipped == 3


# ------------------------------------------------------------------------------------------------------------
# Byte-reproducible video, resumed after SIGKILL
# ------------------------------------------------------------------------------------------------------------

_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, "tests")
import mgld.pipeline.runner as runner
from mgld.config import load_config
from mgld.io.video_writer import VideoWriter
finish, done = VideoWriter._finish_segment, []
def finish_then_die(self):
    finish(self)
    done.append(1)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run, after two finished segments
VideoWriter._finish_segment = finish_then_die
cfg = load_config("configs/tiny.yaml", ["sampling.steps=1", "sampling.guidance_scale=10", "output.segment_frames=4"])
runner.run(cfg, sys.argv[1], sys.argv[2], progress=False)
"""


def test_video_resumed_after_sigkill_equals_an_uninterrupted_one_byte_for_byte(tmp_path, cfg, pipe, one_thread):
    """Before: a resumed video differed from an uninterrupted one (up to 50 levels after decoding); the same frames
    encoded in three processes gave three files."""
    make_video(tmp_path / "in.mp4", 16, audio="aac")
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(tmp_path / "in.mp4"), str(tmp_path / "a.mp4")],
                            cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    parts = sorted(p.name for p in (tmp_path / ".a.mp4.parts").iterdir())
    assert len([p for p in parts if p.endswith(".mp4")]) == 2 and not (tmp_path / "a.mp4").exists()
    cfg = with_sections(cfg, output={"segment_frames": 4})
    resumed = run(cfg, tmp_path / "in.mp4", tmp_path / "a.mp4", pipe=pipe, progress=False)
    assert (resumed.frames_skipped, resumed.frames_written) == (10, 6)
    run(cfg, tmp_path / "in.mp4", tmp_path / "b.mp4", pipe=pipe, progress=False)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.mp4.mgld.json", ".b.mp4.mgld.json", "a.mp4", "b.mp4",
                                                         "in.mp4"]


# ------------------------------------------------------------------------------------------------------------
# Damaged inputs caught before any work
# ------------------------------------------------------------------------------------------------------------


def test_truncated_faststart_video_is_caught_before_any_model(tmp_path, cfg, pipe, monkeypatch):
    """Before: a truncated mp4 with its index at the front ran as a shorter video, exit 0 (or failed at the last
    chunk after the work of the others)."""
    full = tmp_path / "full.mp4"
    write_clip(full, [40 * i for i in range(20)], fmt_options={"movflags": "+faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 4])
    with monkeypatch.context() as m:
        _no_model(m)
        with pytest.raises(InputError) as err:
            run(cfg, cut, tmp_path / "out.mp4", progress=False)
    assert str(cut) in str(err.value) and "of the 20 frames its index lists" in str(err.value)
    summary = run(cfg, cut, tmp_path / "sr", pipe=pipe, progress=False, allow_truncated=True)
    assert 0 < summary.frames_written == len(pngs(tmp_path / "sr")) < 20


def test_keep_going_skips_broken_sequences_and_reports_them(tmp_path, cfg, pipe, monkeypatch):
    save_frames(tmp_path / "lr" / "000", NAMES[:2])
    save_frames(tmp_path / "lr" / "001", NAMES[:2])
    save_frames(tmp_path / "lr" / "002", NAMES[:2])
    bad = tmp_path / "lr" / "001" / NAMES[1]
    bad.write_bytes(bad.read_bytes()[:100])  # of 175
    with monkeypatch.context() as m:
        _no_model(m)
        with pytest.raises(InputError, match=str(bad)):  # named before any model is built
            run(cfg, tmp_path / "lr", tmp_path / "sr", progress=False)
    summary = run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False, keep_going=True)
    assert [name for name, _ in summary.failed] == ["001"] and str(bad) in summary.failed[0][1]
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == ["000", "002"]
    assert summary.frames_written == 4


# ------------------------------------------------------------------------------------------------------------
# Tiny frames (the DIS flow and every stage)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(1, 1), (3, 500), (500, 3)])
def test_tiny_and_thin_frames_run_with_motion_guidance(tmp_path, cfg, pipe, h, w):
    """Before: 1x1 and 500x3 frames crashed inside the DIS flow (OpenCV traceback)."""
    rng = np.random.default_rng(0)
    (tmp_path / "lr").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "lr" / f"{i}.png")
    assert cfg.sampling.guidance_scale > 0 and cfg.flow.method == "dis"
    run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False)
    assert [Image.open(tmp_path / "sr" / f"{i}.png").size for i in range(3)] == [(4 * w, 4 * h)] * 3


def test_dis_flow_on_tiny_frames_matches_the_padded_convention():
    from mgld.flow import DisEstimator

    dis = DisEstimator()
    for h, w in [(1, 1), (8, 128), (12, 504), (3, 500)]:
        ref = torch.rand(2, 3, h, w)
        assert dis(ref, ref).shape == (2, 2, h, w)
    x = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 40, 64)
    shifted = torch.roll(x, 2, dims=-1)
    big = DisEstimator()(x, shifted)
    assert torch.equal(big, DisEstimator()(x, shifted))  # >= 32 px: unpadded, as before


# ------------------------------------------------------------------------------------------------------------
# Clear errors, nothing left behind
# ------------------------------------------------------------------------------------------------------------


def test_full_disk_is_one_clear_error_and_finished_frames_stay(tmp_path, cfg, pipe, monkeypatch):
    """Before: a full disk gave a traceback (a double one for video)."""
    import mgld.io.frames as frames

    save_frames(tmp_path / "lr", NAMES)
    original, calls = frames.atomic_write, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) > 5:  # the first chunk fits
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, data)

    monkeypatch.setattr(frames, "atomic_write", full_disk)
    with pytest.raises(OutputError) as err:
        run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False, keep_going=True)  # not skipped
    assert str(tmp_path / "sr" / NAMES[5]) in str(err.value) and "No space left on device" in str(err.value)
    assert len(pngs(tmp_path / "sr")) == 5 and not list((tmp_path / "sr").glob(".*tmp"))
    monkeypatch.setattr(frames, "atomic_write", original)
    assert run(cfg, tmp_path / "lr", tmp_path / "sr", pipe=pipe, progress=False).frames_written == 1

    import mgld.io.video_writer as video_writer

    make_video(tmp_path / "in.mp4", 4)

    def no_space(self, index, image):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video_writer.VideoWriter, "_encode", no_space)
    with pytest.raises(OutputError, match=r"out.mp4: cannot write the video \(\[Errno 28\] No space left"):
        run(cfg, tmp_path / "in.mp4", tmp_path / "v" / "out.mp4", pipe=pipe, progress=False)
    assert not (tmp_path / "v").exists()  # nothing new behind


def test_failed_run_leaves_nothing_new_behind(tmp_path, cfg, pipe, monkeypatch):
    """Before: failed runs left empty output folders."""
    save_frames(tmp_path / "lr", NAMES[:3])
    make_video(tmp_path / "in.mp4", 3)
    monkeypatch.setattr(pipe, "upscale_clip", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA OOM")))
    for source, out in ((tmp_path / "lr", tmp_path / "a" / "sr"), (tmp_path / "in.mp4", tmp_path / "b" / "o.mp4")):
        with pytest.raises(RuntimeError, match="CUDA OOM"):
            run(cfg, source, out, pipe=pipe, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "lr"]


@pytest.mark.parametrize("argv, fragment", [
    (["--crf", "99"], "output.crf: must be in [0, 51]"),
    (["--shard", "2/2"], "need 0 <= I < N"),
    (["--bit-depth", "12"], "expected 8, 16 or auto"),
    (["--precision", "fp16", "--device", "cpu"], "needs a CUDA device"),
    (["--output-format", "frames", "--output", "x.mp4"], "frames output needs a folder"),
    (["--output", "v.mp4"], "needs a frame rate: give --fps"),
    (["--codec", "ffv1", "--output", "v.mp4", "--fps", "25"], "FFV1 (lossless) video needs a .mkv output"),
])
def test_bad_values_are_refused_before_any_model(tmp_path, monkeypatch, capsys, argv, fragment):
    from mgld.cli import main  # the `mgld` command: its handler prints the one-line error

    save_frames(tmp_path / "lr", NAMES[:2])
    _no_model(monkeypatch)
    monkeypatch.chdir(tmp_path)
    args = ["infer", "--config", str(TINY), "--input", "lr", "--output", "sr", "--quiet"] + argv
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code in (1, 2) and fragment in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr"]


def test_cli_keep_going_reports_the_skipped_sequence_and_exits_non_zero(tmp_path, capsys):
    from mgld.cli.infer import main

    save_frames(tmp_path / "lr" / "a", NAMES[:2])
    save_frames(tmp_path / "lr" / "b", NAMES[:2])
    (tmp_path / "lr" / "b" / NAMES[0]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = main(["--config", str(TINY), "--input", str(tmp_path / "lr"), "--output", str(tmp_path / "sr"),
                 "--steps", "1", "--quiet", "--keep-going"])
    err = capsys.readouterr().err
    assert code == 1 and f"error: b skipped: {tmp_path / 'lr' / 'b' / NAMES[0]}" in err and "Traceback" not in err
    assert "1 sequence(s) failed and were skipped" in err
    assert pngs(tmp_path / "sr" / "a") == sorted(NAMES[:2]) and not (tmp_path / "sr" / "b").exists()
