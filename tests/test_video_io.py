"""Input discovery, streaming readers and resumable writers (mgld.io.frames / mgld.io.sequences)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mgld.io.atomic import TEMP_SUFFIX
from mgld.io.frames import frames_to_tensor, read_image
from mgld.io.sequences import (
    FrameWriter,
    InputError,
    Sequence,
    VideoWriter,
    check_output_writable,
    discover_sequences,
    natural_key,
    output_kind,
)
from video_helpers import H, W, make_video, read_video, save_frames, smooth_frame, write_clip, write_sine

CODEC_TOL = 5 / 255  # mean abs error of an x264 crf 18 + 4:2:0 round trip on these small smooth frames (~3.5/255)


# --------------------------------------------------------------------------------------
# Comparing frames (the synthetic inputs: video_helpers.py)
# --------------------------------------------------------------------------------------


def mean_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


# --------------------------------------------------------------------------------------
# Discovery and reading frames
# --------------------------------------------------------------------------------------


def test_natural_key_orders_numbers_by_value():
    names = ["10.png", "frame_2.png", "2.png", "1.png", "frame_10.png", "B.png", "a.png"]
    assert sorted(names, key=natural_key) == ["1.png", "2.png", "10.png", "a.png", "B.png", "frame_2.png",
                                              "frame_10.png"]


def test_frame_folder_natural_order_and_values(tmp_path):
    names = ["10.png", "9.jpg", "2.png", "1.bmp"]
    frames = save_frames(tmp_path / "clip", names)
    (seq,) = discover_sequences(tmp_path / "clip")
    assert (seq.name, seq.kind, seq.height, seq.width, seq.rate, seq.has_audio) == ("clip", "frames", H, W, None, False)
    assert seq.frame_names == ["1.png", "2.png", "9.png", "10.png"]
    with seq.reader() as reader:
        x = reader.read(0, 4)
    assert x.shape == (4, 3, H, W) and x.dtype == torch.float32
    by_name = dict(zip(names, frames))
    assert torch.equal(x[0], torch.from_numpy(by_name["1.bmp"]).permute(2, 0, 1) / 255)  # lossless
    assert torch.equal(x[3], torch.from_numpy(by_name["10.png"]).permute(2, 0, 1) / 255)
    assert mean_abs(x[2].permute(1, 2, 0) * 255, by_name["9.jpg"]) < 3  # JPEG


def test_sixteen_bit_gray_rgba_become_rgb(tmp_path):
    rgb = smooth_frame(3)
    gray = rgb[..., 1]
    cv2.imwrite(str(tmp_path / "rgb8.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1].astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgb16.tif"), rgb[..., ::-1].astype(np.uint16) * 257 + 100)
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    Image.fromarray(gray.astype(np.int32) * 257).convert("I;16").save(tmp_path / "gray16.png")
    Image.fromarray(np.dstack([gray, np.full_like(gray, 9)]), "LA").save(tmp_path / "gray_alpha.png")
    Image.fromarray(np.dstack([rgb, np.zeros_like(gray)]), "RGBA").save(tmp_path / "rgba.png")  # fully transparent

    def load(name):
        return frames_to_tensor([read_image(tmp_path / name)])[0]

    ref = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    for name in ("rgb8.png", "rgb16.png", "rgb16.tif", "rgba.png"):
        assert (load(name) - ref).abs().max() <= 1 / 255, name  # alpha dropped, not composited
    for name in ("gray8.png", "gray16.png", "gray_alpha.png"):
        x = load(name)
        assert x.shape == (3, H, W)
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
        assert (x[0] - torch.from_numpy(gray) / 255).abs().max() <= 1 / 255, name
    assert read_image(tmp_path / "rgb16.png").dtype == np.uint16  # no truncation to 8 bits before scaling


def test_folder_of_sequences(tmp_path):
    save_frames(tmp_path / "root" / "seq10", ["0.png", "1.png"])
    save_frames(tmp_path / "root" / "seq2", ["a.png", "b.png", "c.png"], h=16, w=16)
    make_video(tmp_path / "root" / "seq3.mp4", 5)
    (tmp_path / "root" / "meta_info.txt").write_text("side file, ignored")
    seqs = discover_sequences(tmp_path / "root")
    assert [(s.name, s.kind, len(s), s.width) for s in seqs] == [
        ("seq2", "frames", 3, 16), ("seq3", "video", 5, W), ("seq10", "frames", 2, W)
    ]


def _bad_input(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """Make a bad input; return (path given to discover_sequences, path the error must name)."""
    folder = tmp_path / "in"
    folder.mkdir()
    if case == "missing":
        return tmp_path / "nope", tmp_path / "nope"
    if case == "empty":
        return folder, folder
    if case == "empty_sub":
        save_frames(folder / "a", ["0.png"])
        (folder / "b").mkdir()
        return folder, folder / "b"
    if case == "ambiguous":
        save_frames(folder / "sub", ["0.png"])
        save_frames(folder, ["0.png"])
        return folder, folder
    if case == "audio_only":
        with av.open(str(folder / "sound.mkv"), "w") as container:
            write_sine(container, container.add_stream("pcm_s16le", rate=8000, layout="mono"), 0.2)
        return folder / "sound.mkv", folder / "sound.mkv"
    if case == "not_a_video":
        (folder / "clip.mp4").write_bytes(b"\x00" * 100)
        return folder / "clip.mp4", folder / "clip.mp4"
    save_frames(folder, ["0.png", "1.png"])
    bad = folder / {"truncated_jpg": "2.jpg", "unsupported": "2.exr"}.get(case, "2.png")
    if case == "unsupported":
        bad.write_bytes(b"not supported")
    elif case == "sizes":
        Image.fromarray(smooth_frame(2, H, W + 2)).save(bad)
    elif case.startswith("truncated"):
        noise = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)  # header intact after cutting
        Image.fromarray(noise).save(bad, quality=95)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:  # single_image
        Image.fromarray(smooth_frame(2)).save(bad)
    return (bad if case == "single_image" else folder), bad


@pytest.mark.parametrize("case", ["missing", "empty", "empty_sub", "ambiguous", "truncated_png", "truncated_jpg",
                                  "sizes", "unsupported", "audio_only", "not_a_video", "single_image"])
def test_bad_inputs_raise_naming_the_file(tmp_path, case):
    given, named = _bad_input(tmp_path, case)
    with pytest.raises(InputError) as err:
        discover_sequences(given)
    assert str(named) in str(err.value)


def test_duplicate_output_names_rejected(tmp_path):
    save_frames(tmp_path, ["1.png", "1.jpg"])
    with pytest.raises(InputError, match="duplicate"):
        discover_sequences(tmp_path)


def test_frame_reader_chunks_with_overlap(tmp_path):
    names = [f"{i}.png" for i in range(7)]
    frames = save_frames(tmp_path, names)
    (seq,) = discover_sequences(tmp_path)
    with seq.reader() as reader:
        chunks = [reader.read(0, 5), reader.read(3, 7)]
        assert len(reader._cache) == 4  # only the current chunk is kept
    assert torch.equal(chunks[0][3:], chunks[1][:2])
    assert torch.equal(chunks[1][-1], torch.from_numpy(frames[6]).permute(2, 0, 1) / 255)


# --------------------------------------------------------------------------------------
# Videos in
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_video_read_in_overlapping_chunks(tmp_path, ext):
    path = tmp_path / f"clip.{ext}"
    frames = make_video(path, 13, audio="aac", rate=Fraction(30000, 1001))
    (seq,) = discover_sequences(path)
    assert (seq.kind, len(seq), seq.height, seq.width, seq.has_audio) == ("video", 13, H, W, True)
    assert seq.rate == Fraction(30000, 1001)
    assert seq.frame_names[:2] == ["00000000.png", "00000001.png"]
    with seq.reader() as reader:
        whole = reader.read(0, 13)
        chunks = [reader.read(s, min(s + 5, 13)) for s in range(0, 13, 3)]  # overlap 2, restarts decoding once
        assert len(reader._cache) <= 5
    stitched = torch.cat([chunks[0]] + [c[2:] for c in chunks[1:]])[:13]
    assert torch.equal(stitched, whole)
    for got, ref in zip(whole, frames):
        assert mean_abs(got.permute(1, 2, 0) * 255, ref) < CODEC_TOL * 255


def test_ten_bit_video_reads_at_sixteen_bits(tmp_path):
    ramp = (np.linspace(0, 65535, W)[None, :, None] * np.ones((H, 1, 3))).astype(np.uint16)
    with av.open(str(tmp_path / "ten.mkv"), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p10le"
        frame = av.VideoFrame.from_ndarray(ramp, format="rgb48le")
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    (seq,) = discover_sequences(tmp_path / "ten.mkv")
    with seq.reader() as reader:
        x = reader.read(0, 1)[0]
        assert reader._cache[0].dtype == np.uint16  # not truncated to 8 bits
    assert mean_abs(x.permute(1, 2, 0) * 65535, ramp) < 2 * 257  # 4:2:0 and RGB<->YUV rounding


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def test_output_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file" / "out", tmp_path / "file" / "out.mp4", tmp_path / "out.webm", tmp_path / "file"):
        with pytest.raises(InputError) as err:
            check_output_writable(bad)
        assert str(bad) in str(err.value)
    check_output_writable(tmp_path / "new" / "deeper" / "out.mp4")
    assert not (tmp_path / "new").exists()  # checking creates nothing

    video = Sequence("v", tmp_path / "v.mp4", "video", ["0.png"], H, W, False, rate=Fraction(25))
    frames = Sequence("f", tmp_path / "f", "frames", ["0.png"], H, W)
    assert output_kind(tmp_path / "out.MKV", video) == "video"
    assert output_kind(tmp_path / "out.mp4", frames) == "video"  # frames -> video (the runner asks for --fps)
    assert output_kind(tmp_path / "out", video) == "frames"
    assert output_kind(tmp_path / "out", [frames, frames]) == "frames"
    assert output_kind(tmp_path / "out", [video, frames], "video") == "video"  # one video each, in a folder
    with pytest.raises(InputError, match="cannot go to one video"):
        output_kind(tmp_path / "out.mp4", [video, video])
    with pytest.raises(InputError, match="needs a folder"):
        output_kind(tmp_path / "out.mp4", video, "frames")


def test_frame_writer_atomic_and_resumable(tmp_path):
    names = ["a.png", "b.png", "c.png"]
    out = tmp_path / "out"
    out.mkdir()
    (out / f".a.png.1234{TEMP_SUFFIX}").write_bytes(b"left by an interrupted run")
    frame = torch.from_numpy(smooth_frame(1)).permute(2, 0, 1) / 255
    with FrameWriter(out, names) as writer:
        assert not writer.done(0)
        writer.write(0, frame)
        writer.write(1, smooth_frame(2))  # uint8 h w 3 also accepted
        assert writer.done(0) and writer.done(1) and not writer.done(2)
    assert sorted(p.name for p in out.iterdir()) == [".mgld", "a.png", "b.png"]  # no temporary files left
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), smooth_frame(1))
    assert FrameWriter(out, names).done(1)
    assert not FrameWriter(out, names, overwrite=True).done(1)


def _write_all(writer: VideoWriter, frames: list[np.ndarray]) -> int:
    written = 0
    for i, frame in enumerate(frames):
        if not writer.done(i):
            writer.write(i, torch.from_numpy(frame).permute(2, 0, 1) / 255)
            written += 1
    writer.close()
    return written


@pytest.mark.parametrize("audio, ext", [(None, "mp4"), ("aac", "mp4"), ("pcm_s16le", "mkv"), ("libopus", "mov")])
def test_video_writer_rate_size_audio(tmp_path, audio, ext):
    source = tmp_path / "source.mkv"
    frames = make_video(source, 11, audio=audio, rate=Fraction(30000, 1001))
    (seq,) = discover_sequences(source)
    out = tmp_path / "sr" / f"out.{ext}"
    writer = VideoWriter(out, seq.rate, W, H, audio_source=seq.source, segment_frames=4)
    assert _write_all(writer, frames) == 11
    decoded, stream, kinds = read_video(out)
    assert len(decoded) == 11 and stream.average_rate == Fraction(30000, 1001)
    assert (stream.codec_context.name, stream.width, stream.height) == ("h264", W, H)
    assert kinds == (["video", "audio"] if audio else ["video"])  # opus is re-encoded to AAC for .mov
    assert all(mean_abs(a, b) < CODEC_TOL * 255 for a, b in zip(decoded, frames))
    assert sorted(p.name for p in out.parent.iterdir()) == [f".{out.name}.mgld.json", out.name]  # record; no work
    # folder, no temporaries


def test_video_writer_resumes_after_interruption(tmp_path):
    frames = [smooth_frame(i) for i in range(10)]
    out = tmp_path / "out.mp4"
    first = VideoWriter(out, 25, W, H, segment_frames=4)
    for i in range(6):  # one finished segment, one half-done; then the process "dies" (no close)
        first.write(i, frames[i])
    assert not out.exists()

    second = VideoWriter(out, 25, W, H, segment_frames=4, num_frames=10)
    assert [second.done(i) for i in (0, 3, 4, 5)] == [True, True, False, False]
    with pytest.raises(ValueError, match="in order"):
        second.write(5, frames[5])
    for i in range(4, 9):
        second.write(i, frames[i])
    second.close()  # interrupted again, but closed (e.g. in a `finally:`): 9 of 10 frames, not finalised
    assert not out.exists()

    third = VideoWriter(out, 25, W, H, segment_frames=4, num_frames=10)
    assert third.done(7) and not third.done(8)
    assert _write_all(third, frames) == 2
    decoded, stream, _ = read_video(out)
    assert len(decoded) == 10 and stream.average_rate == 25
    assert all(mean_abs(a, b) < CODEC_TOL * 255 for a, b in zip(decoded, frames))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.mp4.mgld.json", "out.mp4"]
    assert VideoWriter(out, 25, W, H).done(9)  # a finished output is complete
    assert not VideoWriter(out, 25, W, H, overwrite=True).done(0)


def test_video_writer_discards_segments_made_with_other_settings(tmp_path):
    out = tmp_path / "out.mp4"
    first = VideoWriter(out, 25, W, H, segment_frames=2)
    for i in range(4):
        first.write(i, smooth_frame(i))
    assert VideoWriter(out, 25, W, H, segment_frames=2).done(3)
    assert not VideoWriter(out, 25, W, H, segment_frames=2, crf=30).done(0)  # would mix encodings: start over


def test_video_writer_pads_odd_sizes(tmp_path):
    frame = smooth_frame(0, 17, 33)
    out = tmp_path / "odd.mkv"
    with VideoWriter(out, 24, 33, 17) as writer:
        writer.write(0, frame)
        writer.write(1, frame)
    decoded, stream, _ = read_video(out)
    assert (stream.width, stream.height, len(decoded)) == (34, 18, 2)
    assert mean_abs(decoded[0][:17, :33], frame) < CODEC_TOL * 255
    assert mean_abs(decoded[0][:, 33], decoded[0][:, 32]) < 3  # edge replicated, not black


def test_sample_clip_matches_its_recipe():
    from mgld.assets import make_sample_clip as recipe

    (seq,) = discover_sequences(recipe.OUT_DIR)
    assert (len(seq), seq.width, seq.height) == (recipe.NUM_FRAMES, *recipe.LR_SIZE)
    assert sum(p.stat().st_size for p in seq.files) < 150_000
    skimage_data = pytest.importorskip("skimage.data")
    with seq.reader() as reader:
        stored = (reader.read(0, len(seq)) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    remade = np.stack(recipe.make_frames(skimage_data.astronaut()))
    assert np.abs(stored.astype(int) - remade).max() <= 1  # same recipe (a different libjpeg may round differently)


# --------------------------------------------------------------------------------------
# Quantisation, PNG checks, bit depth
# --------------------------------------------------------------------------------------


def test_quantize_truncates_like_the_authors_or_rounds():
    from mgld.io.frames import quantize_frame

    # x * 255 = 0.2, 0.5, 0.9, 254.5, 254.99, 255 (and out-of-range values clamped)
    values = torch.tensor([0.2, 0.5, 0.9, 254.5, 254.99, 255.0, -3.0, 300.0]) / 255
    frame = values.view(1, 1, 8).expand(3, 1, 8)
    assert quantize_frame(frame)[0, :, 0].tolist() == [0, 0, 0, 254, 254, 255, 0, 255]  # (x*255).astype(uint8)
    assert quantize_frame(frame, quantize="round")[0, :, 0].tolist() == [0, 0, 1, 254, 255, 255, 0, 255]  # half even
    assert quantize_frame(frame, 16)[0, :, 0].tolist() == [51, 128, 231, 65406, 65532, 65535, 0, 65535]  # x 257
    exact = torch.arange(256).float().div(255).view(1, 1, 256).expand(3, 1, 256)
    assert quantize_frame(exact)[0, :, 0].tolist() == list(range(256))  # v/255 survives truncation exactly
    u8 = smooth_frame(0)
    assert quantize_frame(u8) is not None and np.array_equal(quantize_frame(u8), u8)
    assert np.array_equal(quantize_frame(u8, 16), u8.astype(np.uint16) * 257)
    with pytest.raises(ValueError, match="expected a float 3 h w"):
        quantize_frame(np.zeros((4, 4), np.float32))


def test_png_problem_names_truncation_damage_and_size(tmp_path):
    from mgld.io.frames import encode_png, png_problem

    data = encode_png(smooth_frame(0))
    path = tmp_path / "f.png"
    path.write_bytes(data)
    assert png_problem(path, len(data), (H, W, 8)) is None
    assert "expected 20x10 8-bit" in png_problem(path, len(data), (10, 20, 8))
    path.write_bytes(data[: len(data) // 2])
    assert "bytes where" in png_problem(path, len(data)) and "truncated" in png_problem(path)
    damaged = bytearray(data)
    damaged[60] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert "bad CRC" in png_problem(path, len(data))


def test_write_png_is_atomic_lossless_at_every_compression(tmp_path):
    from mgld.io.frames import write_png

    frame = smooth_frame(2)
    sizes = {level: write_png(tmp_path / f"{level}.png", frame, compression=level) for level in (None, 0, 9)}
    for level, size in sizes.items():
        assert (tmp_path / f"{level}.png").stat().st_size == size
        assert np.array_equal(read_image(tmp_path / f"{level}.png"), frame)
    assert sizes[9] < sizes[0] and not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_nested_sequence_folders_only_when_asked(tmp_path):
    save_frames(tmp_path / "calendar" / "truth", ["1.png", "10.png", "2.png"])
    save_frames(tmp_path / "city" / "truth", ["0.png"])
    (seq, _) = discover_sequences(tmp_path, nested=True)
    assert (seq.name, seq.source, seq.frame_names) == ("calendar", tmp_path / "calendar" / "truth",
                                                       ["1.png", "2.png", "10.png"])
    with pytest.raises(InputError, match="must hold only image frames"):
        discover_sequences(tmp_path)
    save_frames(tmp_path / "city" / "input4", ["0.png"])
    with pytest.raises(InputError, match=r"city: sequence 'city' holds no image frames and 2 sub-folders"):
        discover_sequences(tmp_path, nested=True)


def test_frame_writer_sixteen_bit_and_record_checks(tmp_path):
    frame = torch.from_numpy(smooth_frame(1)).permute(2, 0, 1) / 255
    with FrameWriter(tmp_path / "o", ["a.png", "b.png"], bit_depth=16, size=(H, W)) as writer:
        writer.write(0, frame)
        writer.write(1, frame)
    stored = cv2.imread(str(tmp_path / "o" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and np.array_equal(stored[..., ::-1], smooth_frame(1).astype(np.uint16) * 257)
    again = FrameWriter(tmp_path / "o", ["a.png", "b.png"], bit_depth=16, size=(H, W))
    assert again.done(0) and again.done(1)
    (tmp_path / "o" / "b.png").write_bytes((tmp_path / "o" / "b.png").read_bytes()[:100])  # cut after the run
    assert not FrameWriter(tmp_path / "o", ["a.png", "b.png"], bit_depth=16, size=(H, W)).done(1)
    assert not FrameWriter(tmp_path / "o", ["a.png", "b.png"], bit_depth=8, size=(H, W)).done(0)  # other run


def test_writer_that_writes_nothing_leaves_nothing(tmp_path):
    with FrameWriter(tmp_path / "a" / "b", ["x.png"]) as writer:
        assert not writer.done(0)
    writer = VideoWriter(tmp_path / "v" / "out.mp4", 25, W, H, num_frames=3)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# Damaged videos, timing, rotation, codecs, reproducible bytes
# --------------------------------------------------------------------------------------


def test_truncated_faststart_mp4_is_caught_with_both_counts(tmp_path):
    from mgld.io.video_reader import probe_video

    full = tmp_path / "full.mp4"
    write_clip(full, [40 * i for i in range(30)], fmt_options={"movflags": "+faststart"})  # index (moov) first
    with av.open(str(full)) as c:
        assert c.streams.video[0].frames == 30
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    with pytest.raises(InputError) as err:
        discover_sequences(cut)
    assert str(cut) in str(err.value) and "of the 30 frames" in str(err.value) and "--allow-truncated" in str(err.value)
    info = probe_video(cut, allow_truncated=True)
    assert 0 < info.num_frames < 30
    (seq,) = discover_sequences(cut, allow_truncated=True)
    with seq.reader() as reader:
        assert reader.read(0, len(seq)).shape[0] == info.num_frames  # every decodable frame reads


def test_vfr_timing_and_rotation_are_kept(tmp_path):
    src = tmp_path / "vfr.mp4"
    pts = [0, 40, 80, 200, 240, 400, 440, 480]  # ms: three different frame durations
    write_clip(src, pts, rotation=90)
    (seq,) = discover_sequences(src)
    tb = seq.time_base
    assert [float(p * tb) for p in seq.pts] == pytest.approx([p / 1000 for p in pts])
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, seq.rate, W, H, pts=seq.pts, time_base=tb, display_matrix=seq.display_matrix,
                         segments=[(0, 3), (3, 8)])
    _write_all(writer, [smooth_frame(i) for i in range(8)])
    with av.open(str(out)) as container:
        decoded = list(container.decode(video=0))
    assert [round(float(f.time) * 1000) for f in decoded] == pts
    assert decoded[0].rotation == 90


@pytest.mark.parametrize("bits", [8, 16])
def test_ffv1_is_lossless_and_h264_ten_bit(tmp_path, bits):
    dtype = np.uint8 if bits == 8 else np.uint16
    frames = [smooth_frame(i).astype(dtype) * (1 if bits == 8 else 257) + (i if bits == 16 else 0)
              for i in range(5)]
    out = tmp_path / "lossless.mkv"
    with VideoWriter(out, 25, W, H, codec="ffv1", bit_depth=bits, num_frames=5, segment_frames=2) as writer:
        for i, frame in enumerate(frames):
            writer.write(i, frame)  # integer frames, stored as they are
    with av.open(str(out)) as container:
        fmt = "rgb24" if bits == 8 else "rgb48le"
        decoded = [f.to_ndarray(format=fmt) for f in container.decode(video=0)]
    assert all(np.array_equal(a, b) for a, b in zip(decoded, frames)) and len(decoded) == 5
    with pytest.raises(InputError, match="needs a .mkv"):
        VideoWriter(tmp_path / "x.mp4", 25, W, H, codec="ffv1")
    if bits == 16:
        ten = tmp_path / "ten.mp4"
        with VideoWriter(ten, 25, W, H, bit_depth=16, num_frames=5) as writer:
            for i, frame in enumerate(frames):
                writer.write(i, frame)
        with av.open(str(ten)) as container:
            frame = next(container.decode(video=0))
        assert frame.format.name == "yuv420p10le"
        assert mean_abs(frame.to_ndarray(format="rgb48le"), frames[0]) < CODEC_TOL * 65535


def test_same_frames_give_the_same_bytes_in_another_process_and_in_segments(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, numpy as np; sys.path.insert(0, 'tests'); from test_video_io import *; "
            "w = VideoWriter(sys.argv[1], 25, 160, 96, num_frames=12, segment_frames=5); "
            "[w.write(i, smooth_frame(i, 96, 160)) for i in range(12)]; w.close()")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.mp4")], check=True, cwd=ROOT, timeout=300)
    frames = [smooth_frame(i, 96, 160) for i in range(12)]
    # this process, and segments written by separate writers (as several processes do), out of order
    for k in (2, 0, 1):
        writer = VideoWriter(tmp_path / "b.mp4", 25, 160, 96, num_frames=12, segment_frames=5)
        for i in range(5 * k, min(5 * k + 5, 12)):
            writer.write(i, frames[i])
        writer.close()
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
