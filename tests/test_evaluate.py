"""Evaluation over folders: test-set determinism, matching and refusals, reading 8/16-bit frames, reports, temporal
profiles, CLIs."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from conftest import ROOT
from mgld.cli import main as mgld_main
from mgld.eval import evaluation as E
from mgld.eval import inputs as I
from mgld.eval import report as R
from mgld.eval import testset as T
from mgld.io.frames import InputError, write_png

DX = 3  # horizontal pan, pixels per frame


def _script(name):
    return importlib.import_module(f"mgld.cli.{name}")


def _write(folder: Path, stems, frames) -> None:
    for stem, frame in zip(stems, frames):
        write_png(folder / f"{stem}.png", frame)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """HR: 2 sequences x 4 frames of 64x96 panned photographs; LR (degraded, seed 0); bicubic x4."""
    root = tmp_path_factory.mktemp("set")
    for name, photo, start in (("000", data.astronaut(), (180, 150)), ("011", data.coffee(), (100, 200))):
        frames = T.panning_sequence(photo, 4, (64, 96), (0, DX), start)
        _write(root / "hr" / name, [f"{i:08d}" for i in range(4)], frames)
    T.make_testset(root / "hr", root / "lr", seed=0, progress=False)
    T.upscale_bicubic(root / "lr", root / "bicubic")
    return root


def test_testset_is_byte_deterministic_per_seed(dataset, tmp_path):
    T.make_testset(dataset / "hr", tmp_path / "again", seed=0, progress=False)
    T.make_testset(dataset / "hr", tmp_path / "other", seed=1, progress=False)
    first, again, other = (_tree_digest(p) for p in (dataset / "lr", tmp_path / "again", tmp_path / "other"))
    assert len(first) == 2 * 4 + 1 and first == again
    assert set(other) == set(first) and all(other[k] != first[k] for k in first if k.endswith(".png"))


def test_manifest_records_parameters_per_sequence(dataset):
    manifest = json.loads((dataset / "lr" / "manifest.json").read_text())
    assert manifest["seed"] == 0 and set(manifest["sequences"]) == {"000", "011"}
    seq = manifest["sequences"]["000"]
    assert seq["hr_size_hw"] == [64, 96] and seq["lr_size_hw"] == [16, 24]
    assert seq["params"]["stage1"]["codec"]["encoder"] in {"libx264", "mpeg4"}
    assert manifest["config"]["stage2"]["blur"]["prob"] == 0.8
    assert I.read_frame(dataset / "lr" / "000" / "00000003.png").shape == (16, 24, 3)
    assert I.read_frame(dataset / "bicubic" / "011" / "00000000.png").shape == (64, 96, 3)


def test_markdown_table_one_row_per_method_one_column_per_metric(dataset):
    settings = E.EvalSettings(metrics=("psnr", "ssim", "flicker", "ewarp"), flow="dis")
    report = E.evaluate({"bicubic": dataset / "bicubic", "oracle": dataset / "hr"}, dataset / "hr", settings,
                        progress=False)
    rows = [line for line in R.markdown_table(report).splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "PSNR↑", "SSIM↑", "Flicker↓",
                                                                  "E*warp(×10⁻³)↓"]
    assert [r.split("|")[1].strip() for r in body] == ["bicubic", "oracle"]
    assert all(len(r.strip("|").split("|")) == 5 for r in body)
    assert report.mean["oracle"]["ssim"] == 1.0 and report.mean["oracle"]["flicker"] == 0.0
    assert 15 < report.mean["bicubic"]["psnr"] < 35 and report.mean["bicubic"]["flicker"] > 1
    assert report.mean["bicubic"]["ewarp"] > report.mean["oracle"]["ewarp"]


def test_report_files_and_dataset_mean(dataset, tmp_path):
    settings = E.EvalSettings(metrics=("psnr", "flicker"))
    report = E.evaluate({"bicubic": dataset / "bicubic"}, dataset / "hr", settings, progress=False)
    files = R.write_report(report, tmp_path)
    per_frame = files["per_frame"].read_text().splitlines()
    assert per_frame[0] == "method,sequence,index,frame,psnr,flicker" and len(per_frame) == 1 + 2 * 4
    seq_means = [v["psnr"] for v in report.per_sequence["bicubic"].values()]
    assert report.mean["bicubic"]["psnr"] == pytest.approx(np.mean(seq_means))
    saved = json.loads(files["json"].read_text())
    assert saved["mean"]["bicubic"]["psnr"] == pytest.approx(report.mean["bicubic"]["psnr"])


def test_mismatched_frames_are_refused_naming_the_sequence(dataset, tmp_path):
    pred = tmp_path / "pred"
    for name in ("000", "011"):
        frames = I.load_sequence(I.list_sequences(dataset / "hr")[name])
        _write(pred / name, [f"{i:08d}" for i in range(4)], frames)
    (pred / "011" / "00000003.png").unlink()
    with pytest.raises(ValueError, match=r"sequence '011': 3 predicted frames for 4 GT frames.*00000003"):
        E.evaluate({"m": pred}, dataset / "hr", E.EvalSettings(metrics=("psnr",)), progress=False)
    small = I.read_frame(dataset / "lr" / "011" / "00000003.png")
    write_png(pred / "011" / "00000003.png", small)
    with pytest.raises(ValueError, match=r"method 'm': .*011/00000003\.png: frame is 24x16 but 00000000\.png is 96x64"):
        E.evaluate({"m": pred}, dataset / "hr", E.EvalSettings(metrics=("psnr",)), progress=False)
    lr = I.load_sequence(I.list_sequences(dataset / "lr")["011"])
    _write(pred / "011", [f"{i:08d}" for i in range(4)], lr)  # every frame 16x24, GT 64x96
    with pytest.raises(ValueError, match=r"method 'm', sequence '011': frames are \(16, 24\), GT \(64, 96\)"):
        E.evaluate({"m": pred}, dataset / "hr", E.EvalSettings(metrics=("psnr",)), progress=False)


def test_nested_layout_is_found(tmp_path):
    frame = np.zeros((8, 8, 3), np.uint8)
    _write(tmp_path / "calendar" / "truth", ["1", "10", "2"], [frame] * 3)
    _write(tmp_path / "walk" / "truth", ["0"], [frame])
    seqs = I.list_sequences(tmp_path)
    assert list(seqs) == ["calendar", "walk"]
    assert [p.name for p in seqs["calendar"].files] == ["1.png", "2.png", "10.png"]  # natural order
    _write(tmp_path / "walk" / "input4", ["0"], [frame])  # two frame folders: which one is meant?
    with pytest.raises(InputError, match=r"GT: .*walk: sequence 'walk' holds no image frames and 2 sub-folders with "
                                         r"frames \(\['input4', 'truth'\]\); expected exactly one"):
        I.list_sequences(tmp_path, "GT")


def test_sixteen_bit_frames_read_as_inference_reads_them(tmp_path):
    """A 16-bit frame is scaled by its type (v / 65535, as inference reads it) and rounded to 8 bits: v·257 is v."""
    import cv2

    from mgld.io.frames import frames_to_tensor, read_image

    rgb = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    deep = np.random.default_rng(1).integers(0, 65536, (8, 12, 3), dtype=np.uint16)
    write_png(tmp_path / "eight" / "a" / "0.png", rgb)
    write_png(tmp_path / "sixteen" / "a" / "0.png", rgb, bit_depth=16)  # v * 257
    cv2.imwrite(str(tmp_path / "deep16.png"), deep[..., ::-1])
    cv2.imwrite(str(tmp_path / "gray16.png"), deep[..., 0])
    assert np.array_equal(I.read_frame(tmp_path / "sixteen" / "a" / "0.png"), rgb)
    as_inference = frames_to_tensor([read_image(tmp_path / "deep16.png")])[0].permute(1, 2, 0).numpy()
    expected = np.rint(as_inference * 255).astype(np.uint8)
    assert np.array_equal(I.read_frame(tmp_path / "deep16.png"), expected)
    assert np.array_equal(expected, np.rint(deep / 257.0))  # the nearest 8-bit level (OpenCV's 8-bit read: v >> 8)
    assert np.array_equal(I.read_frame(tmp_path / "gray16.png"), np.repeat(expected[..., :1], 3, -1))
    report = E.evaluate({"16bit": tmp_path / "sixteen"}, tmp_path / "eight", E.EvalSettings(metrics=("psnr",)),
                        progress=False)
    assert report.per_frame[0]["psnr"] == float("inf")  # the same frame stored at 8 and at 16 bits


def test_videos_are_refused_naming_the_file(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "clip.mp4").write_bytes(b"")
    with pytest.raises(InputError, match=r"method 'm': .*clip\.mp4"):
        E.prepare({"m": tmp_path / "pred"}, settings=E.EvalSettings(metrics=("niqe",)))


def test_temporal_profile_of_a_translation_is_sheared():
    texture = np.random.default_rng(0).integers(0, 256, (32, 200, 3), dtype=np.uint8)
    frames = T.panning_sequence(texture, 8, (32, 120), (0, DX))
    profile = R.temporal_profile(frames, row=5)
    assert profile.shape == (8, 120, 3)
    for t in range(7):  # each line is the previous one moved left by DX: slope = -DX px per frame
        errors = [np.abs(profile[t + 1, : 120 - abs(s)].astype(int)
                         - profile[t, s:][: 120 - abs(s)].astype(int)).mean() if s >= 0 else np.inf
                  for s in range(0, 8)]
        assert int(np.argmin(errors)) == DX and errors[DX] == 0
    assert R.temporal_profile(frames, col=7).shape == (8, 32, 3)
    with pytest.raises(ValueError, match="outside"):
        R.temporal_profile(frames, row=32)


def test_evaluate_cli_writes_report_and_profiles(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # an empty torch hub cache: no LPIPS weights
    out = tmp_path / "report"
    code = _script("evaluate").main(["--pred", f"bicubic={dataset / 'bicubic'}", "--gt", str(dataset / "hr"),
                                     "--metrics", "psnr,ssim,lpips,flicker", "--out", str(out),
                                     "--profile-row", "10", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "| bicubic |" in printed
    assert (out / "table.md").read_text() in printed
    assert {p.name for p in (out / "profiles").iterdir()} == {"000_row10.png", "011_row10.png"}
    assert (out / "plots" / "000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lpips" in json.loads((out / "report.json").read_text())["skipped"]  # no weights cached
    assert "LPIPS skipped: weights" in printed and "| n/a |" in printed


def test_cli_help_lists_every_flag():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--help"],
                            capture_output=True, text=True, check=True)
    for flag in ("--pred", "--gt", "--lr", "--metrics", "--out", "--crop-border", "--y-channel", "--device",
                 "--batch-size", "--flow", "--raft-weights", "--warp-flow-from", "--profile-row", "--profile-col"):
        assert flag in result.stdout
    assert "clipiqa" in result.stdout and "maniqa" in result.stdout and "Lai et al." in result.stdout


def test_cli_modules_import_no_heavy_package():
    code = ("import sys; import mgld.cli.evaluate, mgld.cli.convert, mgld.cli.download, mgld.cli.make_testset, "
            "mgld.cli.bicubic, mgld.cli.parity; heavy = [m for m in ('torch', 'cv2', 'av', 'pyiqa', "
            "'mgld.eval.metrics') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    from mgld.cli import parity
    from mgld.parity import DEFAULT_TOLERANCE

    assert parity.DEFAULT_TOLERANCE == DEFAULT_TOLERANCE


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """GT + one method at 128x128 (NIQE's single 96-px block: undefined) and 64x64, 3 frames each."""
    root = tmp_path_factory.mktemp("small")
    for size in (128, 64):
        for name, start in (("a", (100, 100)), ("b", (200, 150))):
            frames = T.panning_sequence(data.astronaut(), 3, (size, size), (0, DX), start)
            _write(root / f"gt{size}" / name, ["0", "1", "2"], frames)
            noisy = np.clip(frames + np.random.default_rng(0).normal(0, 5, frames.shape), 0, 255).astype(np.uint8)
            _write(root / f"pred{size}" / name, ["0", "1", "2"], noisy)
    return root


@pytest.mark.parametrize("size", [128, 64])
def test_a_failing_metric_is_reported_and_the_rest_written(small, tmp_path, capsys, size):
    out = tmp_path / "report"
    code = _script("evaluate").main(["--pred", f"m={small / f'pred{size}'}", "--gt", str(small / f"gt{size}"),
                                     "--metrics", "psnr,niqe,flicker", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # not everything was computed
    report = json.loads((out / "report.json").read_text())
    assert [(f["metric"], f["sequence"]) for f in report["failures"]] == [("niqe", "a"), ("niqe", "b")]
    assert all(f"got {size}x{size}" in f["error"] and "192x96" in f["error"] for f in report["failures"])
    assert 25 < report["mean"]["m"]["psnr"] < 50 and report["mean"]["m"]["flicker"] > 0  # the rest is there
    assert report["mean"]["m"]["niqe"] == "nan"
    table = (out / "table.md").read_text()
    assert "NIQE failed on m/a, m/b: ValueError: NIQE needs frames of at least two 96x96 blocks" in table
    assert "| n/a |" in table and table in captured.out
    assert "2 metric computation(s) failed" in captured.err
    per_frame = (out / "per_frame.csv").read_text().splitlines()
    assert per_frame[0] == "method,sequence,index,frame,psnr,niqe,flicker" and per_frame[1].split(",")[5] == ""


def test_options_and_output_folder_are_checked_before_computing(small, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(E, "build_metrics", lambda *a, **k: calls.append(a) or ({}, {}, {}))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    short = tmp_path / "lr"  # an LR input with a frame missing
    for name in ("a", "b"):
        _write(short / name, ["0", "1"], np.zeros((2, 16, 16, 3), np.uint8))
    base = ["--pred", f"m={small / 'pred64'}", "--gt", str(small / "gt64"), "--metrics", "psnr,ewarp", "--quiet"]
    cases = [
        (["--out", str(blocker / "report")], rf"--out {blocker / 'report'}: {blocker} is a file, not a folder"),
        (["--out", str(blocker)], rf"--out {blocker}: exists and is not a folder"),
        (["--out", str(tmp_path / "r"), "--profile-row", "64"], r"--profile-row 64: outside 0\.\.63 for sequence 'a'"),
        (["--out", str(tmp_path / "r"), "--profile-col", "-1"], r"--profile-col -1: outside 0\.\.63"),
        (["--crop-border", "32"], r"--crop-border 32: leaves nothing of sequence 'a' \(64x64 frames\)"),
        (["--warp-flow-from", "lr"], r"--warp-flow-from lr: .*needs the LR frames \(--lr\)"),
        (["--batch-size", "0"], r"--batch-size 0: must be >= 1"),
        (["--metrics", "psnr,psnr"], r"--metrics: psnr given twice"),
        (["--metrics", "psnr,vmaf"], r"--metrics: unknown 'vmaf'"),
        (["--raft-weights", str(tmp_path / "nowhere.pth")], r"--raft-weights .*nowhere\.pth: not found"),
        (["--lr", str(short), "--warp-flow-from", "lr"], rf"--lr {short}, sequence 'a': 2 LR frames for 3 GT"),
    ]
    import re

    for extra, message in cases:
        assert mgld_main(["evaluate", *base, *extra]) == 1  # the `mgld` command's handler prints the one line
        text = capsys.readouterr().err
        assert text.startswith("error: ") and text.count("\n") == 1, text
        if message:
            assert re.search(message, text), text
    assert not calls and not (tmp_path / "r").exists()  # nothing computed, nothing written


def test_ewarp_flow_from_the_upsampled_lr_input(dataset, monkeypatch):
    seen = []

    class Recorder:
        def __call__(self, ref, sup):
            seen.append(ref.clone())
            return ref.new_zeros(ref.shape[0], 2, *ref.shape[-2:])

    from mgld.eval import metrics as M
    from mgld.io.frames import frames_to_tensor

    monkeypatch.setattr(M, "build_flow", lambda *a, **k: (Recorder(), "recorder"))
    settings = E.EvalSettings(metrics=("ewarp",), flow_from="lr")
    report = E.evaluate({"bicubic": dataset / "bicubic"}, dataset / "hr", settings, progress=False, lr=dataset / "lr")
    assert "the LR input, bicubic-upsampled (flow source lr)" in report.notes["ewarp"]
    lr = I.load_sequence(I.list_sequences(dataset / "lr")["000"])
    expected = frames_to_tensor(I.upsample_to(lr, (64, 96)))
    assert torch.equal(seen[0][0], expected[0]) and torch.equal(seen[1][0], expected[1])  # ref of fwd, then bwd
    assert report.mean["bicubic"]["ewarp"] > 0


def test_broken_raft_weights_are_an_error_not_a_skip(small, tmp_path, capsys):
    broken = tmp_path / "raft-things.pth"
    broken.write_bytes(b"\x80\x02garbage")
    assert mgld_main(["evaluate", "--pred", f"m={small / 'pred64'}", "--metrics", "ewarp", "--flow", "raft",
                      "--raft-weights", str(broken), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {broken}: not a readable PyTorch checkpoint")
    assert not (tmp_path / "r").exists()


def test_ewarp_flow_on_gt_is_found_once_per_sequence_for_all_methods(dataset, monkeypatch):
    calls = []

    class Recorder:
        def __call__(self, ref, sup):
            calls.append(1)
            return (ref - sup)[:, :2] * 4.0  # some non-zero flow that depends on the frames

    from mgld.eval import metrics as M

    monkeypatch.setattr(M, "build_flow", lambda *a, **k: (Recorder(), "recorder"))
    settings = E.EvalSettings(metrics=("psnr", "ewarp"), flow_from="gt")
    methods = {"bicubic": dataset / "bicubic", "oracle": dataset / "hr"}
    report = E.evaluate(methods, dataset / "hr", settings, progress=False)
    pairs = sum(len(seq.files) - 1 for seq in I.list_sequences(dataset / "hr").values())
    assert len(calls) == 2 * pairs  # forward and backward flow of each GT pair, not again per method
    alone = {m: E.evaluate({m: root}, dataset / "hr", settings, progress=False) for m, root in methods.items()}
    assert report.per_frame == alone["bicubic"].per_frame + alone["oracle"].per_frame  # method-then-sequence rows
    assert report.per_sequence == {m: alone[m].per_sequence[m] for m in methods}
