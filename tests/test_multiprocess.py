"""Inference on several processes (issue 11 §2): the work split, --shard, and Lightning Fabric on CPU (gloo).

Every input kind is split (a frame folder, a folder of sequences, one video in -> one video out), and the result
equals one process's: bit-identical frames, and the same video bytes (so the same decoded frames and audio).
"""

import subprocess
import sys
import time

import av
import numpy as np
import pytest

from conftest import subprocess_env
from infer_helpers import NAMES, TINY, TINY_OVERRIDES, with_sections
from mgld.pipeline.chunks import plan_chunks
from mgld.pipeline.runner import Job, plan_units, run, split_work, written_range
from video_helpers import make_video, save_frames


def _tree(folder):
    """Every output file (records excluded) -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def _inputs(tmp_path, kind):
    if kind == "frame_folder":
        save_frames(tmp_path / "lr", [f"{i:03d}.png" for i in range(12)])
        return tmp_path / "lr", "sr"
    if kind == "sequences":
        save_frames(tmp_path / "lr" / "000", NAMES[:4])
        save_frames(tmp_path / "lr" / "001", [f"{i}.png" for i in range(7)], h=16, w=24)
        make_video(tmp_path / "lr" / "002.mp4", 6)
        return tmp_path / "lr", "sr"
    make_video(tmp_path / "in.mp4", 12, audio="aac")
    return tmp_path / "in.mp4", "sr.mp4"


# ------------------------------------------------------------------------------------------------------------
# The split
# ------------------------------------------------------------------------------------------------------------


def test_split_covers_the_work_once_in_contiguous_balanced_ranges():
    plans = [plan_chunks(n, 5, overlap) for n, overlap in ((23, 0), (3, 0), (40, 2), (61, 0))]
    jobs = [Job(None, None, kind, None, chunks, *plan_units(chunks, kind, 8))
            for chunks, kind in zip(plans, ("frames", "frames", "video", "video"))]
    for count in (1, 2, 3, 7, 50):
        shares = [split_work(jobs, i, count) for i in range(count)]
        covered = {j: [] for j in range(len(jobs))}
        for share in shares:
            for j, a, b in share:
                covered[j] += list(range(a, b))
        assert all(covered[j] == list(range(len(job.chunks))) for j, job in enumerate(jobs))  # once, in order
        frames = [sum(written_range(jobs[j].chunks, c)[1] - written_range(jobs[j].chunks, c)[0]
                      for j, a, b in share for c in range(a, b)) for share in shares]
        assert sum(frames) == 23 + 3 + 40 + 61
        if count <= 3:
            assert max(frames) - min(frames) <= 16  # about equal (units: a chunk, or a video segment)
        for share in shares:  # a video is cut only at its segment boundaries
            for j, a, b in share:
                if jobs[j].kind == "video":
                    starts = [u[0] for u in jobs[j].units]
                    assert a in starts and (b in starts or b == len(jobs[j].chunks))


def test_video_segments_follow_the_written_ranges():
    chunks = plan_chunks(16, 5)
    units, segments = plan_units(chunks, "video", 4)
    assert units == [(0, 1), (1, 2), (2, 3), (3, 4)] and segments == [(0, 5), (5, 10), (10, 15), (15, 16)]
    overlapped = plan_chunks(20, 5, 2)  # starts 0, 3, 6, ...: each chunk writes up to the next one's start
    units, segments = plan_units(overlapped, "video", 6)
    assert segments == [(0, 6), (6, 12), (12, 20)]  # the last two chunks: 3 + 5 frames


# ------------------------------------------------------------------------------------------------------------
# --shard: independent jobs (in this process: fast)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["frame_folder", "sequences", "video"])
def test_shards_give_the_single_process_result(tmp_path, cfg, pipe, kind):
    cfg = with_sections(cfg, output={"segment_frames": 4})
    source, out = _inputs(tmp_path, kind)
    run(cfg, source, tmp_path / "one" / out, pipe=pipe, progress=False)
    written = [run(cfg, source, tmp_path / "two" / out, pipe=pipe, progress=False, shard=(i, 3)).frames_written
               for i in (2, 0, 1)]  # any order: the last one to finish a video finalises it
    assert min(written) > 0  # every shard did a part
    assert _tree(tmp_path / "two") == _tree(tmp_path / "one")  # same bytes, videos included
    again = run(cfg, source, tmp_path / "two" / out, pipe=pipe, progress=False)
    assert again.frames_written == 0 and again.frames_skipped == sum(written)


# ------------------------------------------------------------------------------------------------------------
# Lightning Fabric: 2 CPU processes (gloo)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["frame_folder", "sequences", "video"])
def test_two_cpu_processes_write_what_one_process_writes(tmp_path, cfg, pipe, one_thread, kind):
    cfg = with_sections(cfg, output={"segment_frames": 4})
    source, out = _inputs(tmp_path, kind)
    run(cfg, source, tmp_path / "one" / out, pipe=pipe, progress=False)
    cmd = [sys.executable, "-m", "mgld", "infer", "--config", str(TINY), "--input", str(source), "--output",
           str(tmp_path / "two" / out), "--devices", "2", "--device", "cpu", "--quiet", *TINY_OVERRIDES,
           "output.segment_frames=4"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout
    print(f"\n{kind}: 2 CPU processes, wall {wall:.1f} s")
    assert _tree(tmp_path / "two") == _tree(tmp_path / "one")
    if kind == "video":
        def decoded(path):
            with av.open(str(path)) as container:
                video = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            with av.open(str(path)) as container:
                audio = [bytes(p) for p in container.demux(audio=0) if p.size]
            return video, audio

        (v1, a1), (v2, a2) = decoded(tmp_path / "one" / out), decoded(tmp_path / "two" / out)
        assert len(v1) == 12 and all(np.array_equal(x, y) for x, y in zip(v1, v2)) and a1 == a2 and a1
